"""``TensorPairs``: two parallel tensor lists, grouped once for repeated fast updates.

See :mod:`compat_ema.core.kernels` for the faithful and fast paths it chooses between.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .batching import HAS_FOREACH_COPY, HAS_FOREACH_LERP, REDUCED, aliased, batches, groups, same_layout
from .flags import use_fast
from .flat import FlatSmall

__all__ = ['TensorPairs']


class TensorPairs:
    """Two parallel tensor lists, grouped once by (device, dtype) for repeated updates.

    Hooks build one per tracked set in ``before_run`` and reuse it every
    iteration, so no per-tensor Python work happens per update. The lists hold
    the tensor *objects* (parameters, buffers, ema buffers); every call reads
    their current storage, so in-place changes, ``param.data = ...`` and storage
    exchanges by :func:`swap_` are all seen. Grouping is an optimisation only:
    a foreach call with mixed dtypes or devices takes the per-tensor route and
    computes what the loop computes. Build a new one when the set of tensor
    objects changes.

    Owners of the destinations (hooks and their ``ema_*`` buffers, averaged
    models and their parameters) also call :meth:`flatten_small_destinations`,
    which lets the fast path update and swap all small CPU destinations a
    buffer or a batch at a time (:mod:`compat_ema.core.flat`).
    """

    __slots__ = ('dst', 'src', 'groups', 'aliased', 'same_layout', 'batches', 'flatten', '_flat',
                 '_exchanged')

    def __init__(self, dst: Sequence[Tensor], src: Sequence[Tensor]):
        self.dst = list(dst)
        self.src = list(src)
        self.same_layout = same_layout(self.dst, self.src)
        self.aliased = aliased(self.dst)
        self.groups = list(groups(self.dst, self.src).values())
        self.batches = [b for e_list, s_list in self.groups for b in batches(e_list, s_list)]
        self.flatten = False
        self._flat: Optional[FlatSmall] = None
        #: pair index -> state left by the last storage exchange of :func:`swap_`
        self._exchanged: Dict[int, tuple] = {}

    def flatten_small_destinations(self) -> 'TensorPairs':
        """Allow the fast path to re-point small CPU destinations into one buffer.

        For the owner of the destinations only (a hook and its ``ema_*``
        buffers, an averaged model and its parameters). On the first fast
        update or swap, every destination that is a plain, contiguous CPU
        float32/float64 tensor under :data:`~compat_ema.core.flat.FLAT_MAX_NUMEL` elements and holds
        its storage alone (nothing else could see the move) gets its values
        copied into one flat buffer per dtype and its storage re-pointed to its
        slice. The tensor objects, shapes and values are unchanged; only their
        storage is shared (so ``torch.save`` of a single one writes the whole
        buffer). Then :meth:`mul_add_` scales the buffer with one ``mul_``;
        :meth:`mul_add_`, :meth:`lerp_` and :meth:`swa_add_` gather 1-D sources
        with ``cat`` and update a batch with one op; :func:`swap_` given these
        pairs swaps a batch with one ``cat``, one foreach copy and one flat
        copy. Each call first checks that every adopted tensor still lives in
        its slice (and every gathered source still has its size); if not, the
        flat steps are dropped for good. Returns ``self``.
        """
        self.flatten = True
        return self

    def _fast(self, fast: Optional[bool]) -> bool:
        return use_fast(fast) and self.same_layout and not self.aliased

    def _flat_plan(self) -> Optional[FlatSmall]:
        if not self.flatten:
            return None
        if self._flat is None:
            self._flat = FlatSmall(self)
            if not self._flat.dst:
                self.flatten = False
                self._flat = None
                return None
        if not self._flat.holds():
            self.flatten = False
            self._flat = None
            return None
        return self._flat

    def _after_flat(self, flat_op: Callable[[FlatSmall], None],
                    grouped: bool = False) -> Sequence[Tuple[List[Tensor], ...]]:
        """Run ``flat_op(flat)`` on the flat buffer, when there is one; return the
        ``(dst list, src list)`` pairs left for foreach: the cache-sized batches, or the
        (device, dtype) groups when ``grouped``."""
        flat = self._flat_plan()
        if flat is None:
            return self.groups if grouped else self.batches
        flat_op(flat)
        return flat.rest_groups if grouped else flat.rest

    def mul_add_(self, momentum: float, fast: Optional[bool] = None) -> None:
        """See :func:`mul_add_`."""
        keep = 1 - momentum
        with torch.no_grad():
            if not self._fast(fast):
                for e, s in zip(self.dst, self.src):
                    e.mul_(keep).add_(s, alpha=momentum)
                return
            # cache-sized batches: each batch's ema is still in cache for add_
            for e_list, s_list in self._after_flat(lambda flat: flat.mul_add_(keep, momentum)):
                if any(e.dtype in REDUCED for e in e_list):
                    # foreach mul_ by a Python scalar rounds the scalar to the
                    # tensor's dtype for these (measured, CPU); the loop does not.
                    for e, s in zip(e_list, s_list):
                        e.mul_(keep).add_(s, alpha=momentum)
                    continue
                torch._foreach_mul_(e_list, keep)
                torch._foreach_add_(e_list, s_list, alpha=momentum)

    def lerp_(self, weight: float, fast: Optional[bool] = None) -> None:
        """See :func:`lerp_`."""
        with torch.no_grad():
            if not (self._fast(fast) and HAS_FOREACH_LERP):
                for a, s in zip(self.dst, self.src):
                    a.lerp_(s, weight)
                return
            for a_list, s_list in self._after_flat(lambda flat: flat.lerp_(weight), grouped=True):
                torch._foreach_lerp_(a_list, s_list, weight)

    def swa_add_(self, alpha: float, fast: Optional[bool] = None) -> None:
        """See :func:`swa_add_`."""
        with torch.no_grad():
            if not self._fast(fast):
                for a, s in zip(self.dst, self.src):
                    a.add_(s - a, alpha=alpha)
                return
            for a_list, s_list in self._after_flat(lambda flat: flat.swa_add_(alpha)):
                diff = torch._foreach_sub(s_list, a_list)
                torch._foreach_add_(a_list, diff, alpha=alpha)

    def copy_(self, fast: Optional[bool] = None) -> None:
        """See :func:`copy_`."""
        with torch.no_grad():
            if not (self._fast(fast) and HAS_FOREACH_COPY):
                for d, s in zip(self.dst, self.src):
                    d.copy_(s)
                return
            for d_list, s_list in self.groups:
                torch._foreach_copy_(d_list, s_list)
