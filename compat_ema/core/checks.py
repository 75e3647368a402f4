"""Argument checks that survive ``python -O``.

Upstream validates hook arguments with ``assert``; under ``-O`` those checks
vanish. compat_ema raises the same exception type (AssertionError) explicitly,
with a message that names the argument, the value and the allowed range. The
conditions are upstream's own, so exactly the same values pass.
"""
from __future__ import annotations

from typing import Any, Type


def require(condition: Any, message: str, exc: Type[Exception] = AssertionError) -> None:
    """Raise ``exc(message)`` unless ``condition`` holds (never stripped by -O)."""
    if not condition:
        raise exc(message)

