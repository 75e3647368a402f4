"""Grouping and batching of parallel tensor lists for the multi-tensor kernels.

Performance only: grouping by (device, dtype) and cache-sized batches change
which C++ call runs a tensor's op, never the op or its operands.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import torch_features

__all__ = ['BATCH_BYTES', 'GRAIN_SIZE', 'HAS_FOREACH_LERP', 'HAS_FOREACH_COPY', 'REDUCED', 'aliased',
           'groups', 'batches', 'same_layout']

HAS_FOREACH_LERP = torch_features.FOREACH_LERP
HAS_FOREACH_COPY = torch_features.FOREACH_COPY
#: CPU ``_foreach_mul_`` by a Python scalar rounds the scalar to these dtypes; ``mul_`` does not.
REDUCED = (torch.bfloat16, torch.float16)

#: Two-pass kernels (mul_ then add_) run on batches of about this many bytes of
#: destination, so the second pass finds them in cache (the per-tensor loop gets
#: that for free; one foreach pass over the whole model does not). A tensor larger
#: than this is a batch of its own. Performance only: results do not depend on it.
BATCH_BYTES = 1 << 20

#: torch's parallel grain size (``at::internal::GRAIN_SIZE``, 32768 elements in every torch
#: release since 1.0): a CPU element-wise op over at most this many elements runs inline on
#: the calling thread, never in an OpenMP parallel region. Upstream's per-tensor ops on small
#: tensors stay under it; the flat buffer's batched ops are cut to stay under it too, because
#: a parallel region stalls when another process holds a core (``benchmarks/RESULTS.md``).
GRAIN_SIZE = 32768


def aliased(tensors: Sequence[Tensor]) -> bool:
    """True when two non-empty tensors in ``tensors`` start at the same address."""
    ptrs = [t.data_ptr() for t in tensors if t.numel()]
    return len(set(ptrs)) != len(ptrs)


def groups(*lists: Sequence[Tensor]) -> Dict[Tuple[torch.device, torch.dtype], Tuple[List[Tensor], ...]]:
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


def batches(dst: List[Tensor], src: List[Tensor],
            max_bytes: Optional[int] = None) -> List[Tuple[List[Tensor], List[Tensor]]]:
    """Consecutive pairs in batches of about :data:`BATCH_BYTES` (or ``max_bytes``) of ``dst``:
    a batch exceeds it only when one tensor does."""
    limit = BATCH_BYTES if max_bytes is None else max_bytes
    out: List[Tuple[List[Tensor], List[Tensor]]] = []
    cur_d: List[Tensor] = []
    cur_s: List[Tensor] = []
    used = 0
    for d, s in zip(dst, src):
        size = d.numel() * d.element_size()
        if cur_d and used + size > limit:
            out.append((cur_d, cur_s))
            cur_d, cur_s, used = [], [], 0
        cur_d.append(d)
        cur_s.append(s)
        used += size
    if cur_d:
        out.append((cur_d, cur_s))
    return out


def same_layout(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Each pair has one dtype and one device."""
    return all(x.dtype == y.dtype and x.device == y.device for x, y in zip(a, b))
