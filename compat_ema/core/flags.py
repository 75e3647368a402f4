"""Process-wide switches of the fast path (used by :mod:`compat_ema.core.kernels`).

``COMPAT_EMA_FAITHFUL=1`` in the environment (or :func:`set_fast_path`) rules
the fast path out everywhere; ``COMPAT_EMA_SWAP=copy`` (or
:func:`set_exchange_swap`) keeps swaps from exchanging storage.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ['set_fast_path', 'fast_path_enabled', 'set_exchange_swap', 'exchange_swap_enabled',
           'use_fast']

_FAST = os.environ.get('COMPAT_EMA_FAITHFUL', '') in ('', '0')
_EXCHANGE = os.environ.get('COMPAT_EMA_SWAP', '').lower() not in ('copy', '0')


def set_fast_path(enabled: bool) -> None:
    """Enable or disable the multi-tensor fast path (and storage exchange) process-wide."""
    global _FAST
    _FAST = bool(enabled)


def fast_path_enabled() -> bool:
    """Whether kernels use the multi-tensor path by default."""
    return _FAST


def set_exchange_swap(enabled: bool) -> None:
    """Allow (True, the default) or forbid storage exchange in the fast ``swap_``."""
    global _EXCHANGE
    _EXCHANGE = bool(enabled)


def exchange_swap_enabled() -> bool:
    """Whether the fast ``swap_`` may exchange storage."""
    return _EXCHANGE


def use_fast(fast: Optional[bool]) -> bool:
    """``fast`` if given, else the process-wide setting."""
    return _FAST if fast is None else fast
