"""The flat buffer of small destinations (``TensorPairs.flatten_small_destinations``).

On CPU every per-tensor op costs a few microseconds, which dominates for small
tensors. The owner of a set of destinations (a hook's ``ema_*`` buffers, an
averaged model's parameters) may let the fast path move the small ones into one
flat buffer per dtype, so an update runs one op per buffer (or per batch of
gathered sources) instead of one per tensor. For float32/float64 the vector
body and the scalar tail of the CPU kernels round alike, so where an element
sits in the buffer cannot change its result (``tests/test_kernels_flat.py``,
odd sizes, 1 and 2 threads). ``COMPAT_EMA_FLAT=0`` (or :data:`FLAT_MAX_NUMEL` = 0)
turns it off.

Every op on the buffer covers at most :data:`~compat_ema.core.batching.GRAIN_SIZE`
elements, so, like upstream's per-tensor ops on the same small tensors, it runs
on the calling thread and never enters a parallel region (which stalls when
another process holds a core). ``mul_add_`` scales and adds one such chunk at a
time, while it is in cache.
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from . import batching
from .batching import HAS_FOREACH_LERP, batches, groups
from .ownership import exclusive

__all__ = ['FLAT_MAX_NUMEL', 'FlatSmall']

#: Dtypes whose CPU kernels may run on one flat buffer: their scalar tail and vector
#: body round alike, so where a tensor starts in the buffer cannot change a bit
#: (``tests/test_kernels_flat.py``; float16/bfloat16 tails of ``add_`` differ).
_FLAT_DTYPES = (torch.float32, torch.float64)
_DATA_PTR = Tensor.data_ptr
_NUMEL = Tensor.numel

#: Destinations under this many elements may be re-pointed into a flat buffer by
#: :meth:`~compat_ema.core.kernels.TensorPairs.flatten_small_destinations` (where the
#: per-tensor cost of each op dominates). Larger ones keep their own storage, which is what lets
#: :func:`~compat_ema.core.swap.swap_` exchange them.
FLAT_MAX_NUMEL = 0 if os.environ.get('COMPAT_EMA_FLAT', '').lower() in ('0', 'off') else 1 << 13


class FlatSmall:
    """Small CPU destination tensors re-pointed into one flat buffer per dtype.

    Built once by :meth:`compat_ema.core.kernels.TensorPairs.flatten_small_destinations`:
    each adopted destination (a plain, contiguous, exclusively owned CPU
    float32/float64 tensor under :data:`FLAT_MAX_NUMEL` elements, the proof
    :func:`~compat_ema.core.ownership.exchangeable` uses) gets its values copied
    into a slice of a new flat buffer and its storage re-pointed there
    (``dst.data = view``), so one ``mul_`` on the flat buffer scales all of
    them. Destinations whose source is 1-D come first: their sources are
    gathered with ``torch.cat`` into a scratch buffer (one call per batch of at
    most :data:`~compat_ema.core.batching.GRAIN_SIZE` elements, so the scratch
    is small and no op enters a parallel region) and added (or, in a swap,
    exchanged) with one op per batch; the others get a foreach ``add_``, and
    their part of the buffer is scaled in chunks of at most ``GRAIN_SIZE``. ``ptrs``
    records where each destination must still live; a call that finds otherwise drops
    the plan.
    """

    __slots__ = ('flats', 'dst', 'src', 'ptrs', 'rest', 'rest_groups', 'gathers', 'tail', 'gathered',
                 'numels', 'scratch', 'tail_chunks')

    def __init__(self, pairs):
        self.flats: List[Tensor] = []
        self.dst: List[Tensor] = []
        self.src: List[Tensor] = []
        #: (sources, destinations, their slice of the flat buffer) per gathered batch
        self.gathers: List[Tuple[List[Tensor], List[Tensor], Tensor, Tensor]] = []
        #: (destinations, sources) added per tensor
        self.tail: Tuple[List[Tensor], List[Tensor]] = ([], [])
        #: the tail destinations' part of each flat buffer, in chunks of at most GRAIN_SIZE
        self.tail_chunks: List[Tensor] = []
        picked = set()
        planned = []
        for dtype in _FLAT_DTYPES:
            idx = [i for i, d in enumerate(pairs.dst)
                   if d.dtype == dtype and d.device.type == 'cpu' and 0 < d.numel() < FLAT_MAX_NUMEL
                   and d.is_contiguous() and exclusive(d)]
            if len(idx) < 2:
                continue
            idx.sort(key=lambda i: pairs.src[i].dim() != 1)  # 1-D sources first (stable)
            dst = [pairs.dst[i] for i in idx]
            src = [pairs.src[i] for i in idx]
            flat = torch.empty(sum(d.numel() for d in dst), dtype=dtype)
            for d, view in zip(dst, flat.split([d.numel() for d in dst])):
                view = view.view(d.shape)
                view.copy_(d)
                d.data = view
            self.flats.append(flat)
            self.dst += dst
            self.src += src
            picked.update(idx)
            n1 = sum(1 for t in src if t.dim() == 1)
            start = 0
            for d_batch, s_batch in batches(dst[:n1], src[:n1], batching.GRAIN_SIZE * flat.element_size()):
                n = sum(d.numel() for d in d_batch)
                planned.append((s_batch, d_batch, flat[start:start + n]))
                start += n
            self.tail_chunks += list(flat[start:].split(batching.GRAIN_SIZE)) if start < flat.numel() else []
            self.tail[0].extend(dst[n1:])
            self.tail[1].extend(src[n1:])
        # one scratch buffer shared by all batches (at most GRAIN_SIZE elements each)
        self.scratch = torch.empty(max([v.nbytes for _, _, v in planned], default=0), dtype=torch.uint8)
        self.gathers = [(s_batch, d_batch, view, self.scratch[:view.nbytes].view(view.dtype))
                        for s_batch, d_batch, view in planned]
        #: every gathered source, in order, and its size when the plan was made
        self.gathered = [t for g in self.gathers for t in g[0]]
        self.numels = list(map(_NUMEL, self.gathered))
        self.ptrs = list(map(_DATA_PTR, self.dst))
        rest = [i for i in range(len(pairs.dst)) if i not in picked]
        self.rest_groups = list(groups([pairs.dst[i] for i in rest], [pairs.src[i] for i in rest]).values())
        self.rest = [b for e_list, s_list in self.rest_groups for b in batches(e_list, s_list)]

    def holds(self) -> bool:
        """Every adopted destination still lives where it was put and every gathered
        source still has its size (a source that changed shape otherwise makes
        ``cat`` or ``add_`` fail, as upstream's ``add_`` does)."""
        return list(map(_DATA_PTR, self.dst)) == self.ptrs and list(map(_NUMEL, self.gathered)) == self.numels

    def mul_add_(self, keep: float, momentum: float) -> None:
        for s_batch, _, view, scratch in self.gathers:
            view.mul_(keep)
            torch.cat(s_batch, out=scratch)
            view.add_(scratch, alpha=momentum)
        for chunk in self.tail_chunks:
            chunk.mul_(keep)
        if self.tail[0]:
            torch._foreach_add_(self.tail[0], self.tail[1], alpha=momentum)

    def lerp_(self, weight: float) -> None:
        for s_batch, _, view, scratch in self.gathers:
            torch.cat(s_batch, out=scratch)
            view.lerp_(scratch, weight)
        if self.tail[0]:
            lerp_many(self.tail[0], self.tail[1], weight)

    def swa_add_(self, alpha: float) -> None:
        for s_batch, _, view, scratch in self.gathers:
            torch.cat(s_batch, out=scratch)
            view.add_(scratch.sub_(view), alpha=alpha)  # scratch = s - a, as upstream's s - a
        if self.tail[0]:
            diff = torch._foreach_sub(self.tail[1], self.tail[0])
            torch._foreach_add_(self.tail[0], diff, alpha=alpha)

    def swap_batches_(self, chosen: Sequence[Tuple[List[Tensor], List[Tensor], Tensor, Tensor]]) -> None:
        """Swap gathered batches ``(source .data aliases, destinations, flat slice, scratch)``:
        ``scratch = cat(sources)``, ``sources <- destinations``, ``flat slice <- scratch``."""
        for xs, ds, view, scratch in chosen:
            torch.cat(xs, out=scratch)
            torch._foreach_copy_(xs, ds)
            view.copy_(scratch)



def lerp_many(dst: List[Tensor], src: List[Tensor], weight: float) -> None:
    if HAS_FOREACH_LERP:
        torch._foreach_lerp_(dst, src, weight)
    else:
        for a, s in zip(dst, src):
            a.lerp_(s, weight)
