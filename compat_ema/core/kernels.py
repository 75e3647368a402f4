"""The update and swap kernels under every generation.

Each function has two paths that give bitwise-equal results:

* the *faithful* path: a Python loop issuing exactly the per-tensor ops of the
  upstream code (``mul_`` then ``add_(alpha=)`` for mmcv/mmdet, ``lerp_`` for
  mmengine, ``add_(src - avg, alpha=)`` for SWA, clone + two copies for swaps);
* the *fast* path: the same per-tensor ops issued as multi-tensor
  ``torch._foreach_*`` calls, grouped by (device, dtype) (:mod:`.batching`),
  so one C++ call does the work of the loop. On CPU a foreach call runs the
  very same per-tensor kernel for each tensor (so every element takes the same
  vectorised or scalar code path as upstream's loop); on CUDA it uses the
  fused multi-tensor kernel, whose per-element arithmetic is checked against
  the loop by the ``gpu`` tests.

Set ``COMPAT_EMA_FAITHFUL=1`` in the environment, call :func:`set_fast_path`,
or pass ``fast=False`` to rule the fast path out (:mod:`.flags`). The fast path
falls back to the faithful loop whenever two destination tensors share memory
(tied weights seen through ``state_dict()``), because the upstream loop applies
the update to such memory twice, in order, and a multi-tensor kernel need not.

Owners of their destinations may also keep the small CPU float32/float64 ones
in one flat buffer (:meth:`TensorPairs.flatten_small_destinations`,
:mod:`.flat`; ``COMPAT_EMA_FLAT=0`` turns it off), whose ops each cover at most
torch's parallel grain size (:data:`~.batching.GRAIN_SIZE`), so that, like
upstream's per-tensor ops on small tensors, they never enter a parallel region
(one stalls when another process holds a core). Swaps (:func:`swap_`,
:mod:`.swap`) *exchange storage* instead of copying when nobody else can see
the difference (:func:`exchangeable`, :mod:`.ownership`, which uses torch's private
storage use count only behind a feature probe; without it everything is copied, as
upstream does); ``COMPAT_EMA_SWAP=copy``
or :func:`set_exchange_swap` makes them always copy (e.g. when a captured CUDA
graph reads parameters by raw address). No single-pass (fused or chunked)
variant of the two-pass ``mul_``/``add_`` is used: measured on the reference
machine it was not faster (see ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from .flags import exchange_swap_enabled, fast_path_enabled, set_exchange_swap, set_fast_path
from .ownership import exchangeable
from .pairs import TensorPairs
from .swap import swap_

__all__ = ['set_fast_path', 'fast_path_enabled', 'set_exchange_swap', 'exchange_swap_enabled',
           'TensorPairs', 'mul_add_', 'lerp_', 'swa_add_', 'copy_', 'swap_', 'exchangeable']


def mul_add_(ema: Sequence[Tensor], src: Sequence[Tensor], momentum: float,
             fast: Optional[bool] = None) -> None:
    """``e.mul_(1 - momentum).add_(s, alpha=momentum)`` for each pair (mmcv/mmdet).

    ``1 - momentum`` is computed once in Python double precision, exactly as
    the upstream expression does, and both scalars reach the kernels as doubles.
    The result equals mmcv's deprecated ``add_(momentum, tensor)`` form without
    calling that overload. ``src`` may hold parameters themselves: they are
    only read, under ``no_grad``.
    """
    TensorPairs(ema, src).mul_add_(momentum, fast)


def lerp_(avg: Sequence[Tensor], src: Sequence[Tensor], weight: float,
          fast: Optional[bool] = None) -> None:
    """``a.lerp_(s, weight)`` for each pair (mmengine ``ExponentialMovingAverage``)."""
    TensorPairs(avg, src).lerp_(weight, fast)


def swa_add_(avg: Sequence[Tensor], src: Sequence[Tensor], alpha: float,
             fast: Optional[bool] = None) -> None:
    """``a.add_(s - a, alpha=alpha)`` for each pair (mmengine ``StochasticWeightAverage``)."""
    TensorPairs(avg, src).swa_add_(alpha, fast)


def copy_(dst: Sequence[Tensor], src: Sequence[Tensor], fast: Optional[bool] = None) -> None:
    """``d.copy_(s)`` for each pair, in order."""
    TensorPairs(dst, src).copy_(fast)
