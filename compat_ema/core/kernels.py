"""The update and swap kernels under every generation.

Each function has two paths that give bitwise-equal results:

* the *faithful* path: a Python loop issuing exactly the per-tensor ops of the
  upstream code (``mul_`` then ``add_(alpha=)`` for mmcv/mmdet, ``lerp_`` for
  mmengine, ``add_(src - avg, alpha=)`` for SWA, clone + two copies for swaps);
* the *fast* path: the same ops as multi-tensor ``torch._foreach_*`` calls,
  grouped by (device, dtype), so one C++ call does the work of the loop.

Set ``COMPAT_EMA_FAITHFUL=1`` in the environment, call :func:`set_fast_path`,
or pass ``fast=False`` to rule the fast path out. The fast path falls back to
the faithful loop whenever two destination tensors share memory (tied weights
seen through ``state_dict()``), because the upstream loop applies the update
to such memory twice, in order, and a multi-tensor kernel need not.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['set_fast_path', 'fast_path_enabled', 'mul_add_', 'lerp_', 'swa_add_',
           'copy_', 'swap_']

_FAST = os.environ.get('COMPAT_EMA_FAITHFUL', '') in ('', '0')
_HAS_FOREACH_LERP = hasattr(torch, '_foreach_lerp_')
_HAS_FOREACH_COPY = hasattr(torch, '_foreach_copy_')
_REDUCED = (torch.bfloat16, torch.float16)


def set_fast_path(enabled: bool) -> None:
    """Enable or disable the multi-tensor fast path process-wide."""
    global _FAST
    _FAST = bool(enabled)


def fast_path_enabled() -> bool:
    """Whether kernels use the multi-tensor path by default."""
    return _FAST


def _use_fast(fast: Optional[bool]) -> bool:
    return _FAST if fast is None else fast


def _aliased(tensors: Sequence[Tensor]) -> bool:
    """True when two tensors in ``tensors`` share their first element."""
    ptrs = {t.data_ptr() for t in tensors if t.numel()}
    return len(ptrs) != sum(1 for t in tensors if t.numel())


def _groups(*lists: Sequence[Tensor]) -> Dict[Tuple[torch.device, torch.dtype], Tuple[List[Tensor], ...]]:
    """Group parallel tensor lists by the (device, dtype) of the first list."""
    out: Dict[Tuple[torch.device, torch.dtype], Tuple[List[Tensor], ...]] = {}
    for items in zip(*lists):
        key = (items[0].device, items[0].dtype)
        bucket = out.get(key)
        if bucket is None:
            bucket = out[key] = tuple([] for _ in lists)
        for dst, t in zip(bucket, items):
            dst.append(t)
    return out


def _same_layout(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return all(x.dtype == y.dtype and x.device == y.device for x, y in zip(a, b))


def mul_add_(ema: Sequence[Tensor], src: Sequence[Tensor], momentum: float,
             fast: Optional[bool] = None) -> None:
    """``e.mul_(1 - momentum).add_(s, alpha=momentum)`` for each pair (mmcv/mmdet).

    ``1 - momentum`` is computed once in Python double precision, exactly as
    the upstream expression does, and both scalars reach the kernels as doubles.
    The result equals mmcv's deprecated ``add_(momentum, tensor)`` form without
    calling that overload.
    """
    keep = 1 - momentum
    if not (_use_fast(fast) and _same_layout(ema, src)) or _aliased(ema):
        for e, s in zip(ema, src):
            e.mul_(keep).add_(s, alpha=momentum)
        return
    for (_, dtype), (e_list, s_list) in _groups(ema, src).items():
        if dtype in _REDUCED:  # CPU foreach mul_/add_ round differently for these: measured
            for e, s in zip(e_list, s_list):
                e.mul_(keep).add_(s, alpha=momentum)
            continue
        torch._foreach_mul_(e_list, keep)
        torch._foreach_add_(e_list, s_list, alpha=momentum)


def lerp_(avg: Sequence[Tensor], src: Sequence[Tensor], weight: float,
          fast: Optional[bool] = None) -> None:
    """``a.lerp_(s, weight)`` for each pair (mmengine ``ExponentialMovingAverage``)."""
    if not (_use_fast(fast) and _HAS_FOREACH_LERP and _same_layout(avg, src)) or _aliased(avg):
        for a, s in zip(avg, src):
            a.lerp_(s, weight)
        return
    for a_list, s_list in _groups(avg, src).values():
        torch._foreach_lerp_(a_list, s_list, weight)


def swa_add_(avg: Sequence[Tensor], src: Sequence[Tensor], alpha: float,
             fast: Optional[bool] = None) -> None:
    """``a.add_(s - a, alpha=alpha)`` for each pair (mmengine ``StochasticWeightAverage``)."""
    if not (_use_fast(fast) and _same_layout(avg, src)) or _aliased(avg):
        for a, s in zip(avg, src):
            a.add_(s - a, alpha=alpha)
        return
    for a_list, s_list in _groups(avg, src).values():
        diff = torch._foreach_sub(s_list, a_list)
        torch._foreach_add_(a_list, diff, alpha=alpha)


def copy_(dst: Sequence[Tensor], src: Sequence[Tensor], fast: Optional[bool] = None) -> None:
    """``d.copy_(s)`` for each pair, in order."""
    if not (_use_fast(fast) and _HAS_FOREACH_COPY and _same_layout(dst, src)) or _aliased(dst):
        for d, s in zip(dst, src):
            d.copy_(s)
        return
    for d_list, s_list in _groups(dst, src).values():
        torch._foreach_copy_(d_list, s_list)


def swap_(a: Sequence[Tensor], b: Sequence[Tensor], fast: Optional[bool] = None) -> None:
    """Exchange the contents of each pair in place, as upstream's swap loops do.

    Upstream: ``tmp = x.clone(); x.copy_(y); y.copy_(tmp)`` per pair, in order.
    Pairs are processed in order so that aliased tensors (tied weights listed
    twice) end exactly as upstream leaves them.
    """
    if not _use_fast(fast) or _aliased(list(a) + list(b)) or not _same_layout(a, b):
        for x, y in zip(a, b):
            tmp = x.clone()
            x.copy_(y)
            y.copy_(tmp)
        return
    for x_list, y_list in _groups(a, b).values():
        tmp = [x.clone() for x in x_list]
        copy_(x_list, y_list, fast=True)
        copy_(y_list, tmp, fast=True)
