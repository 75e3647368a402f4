"""The update and swap kernels under every generation.

Each function has two paths that give bitwise-equal results:

* the *faithful* path: a Python loop issuing exactly the per-tensor ops of the
  upstream code (``mul_`` then ``add_(alpha=)`` for mmcv/mmdet, ``lerp_`` for
  mmengine, ``add_(src - avg, alpha=)`` for SWA, clone + two copies for swaps);
* the *fast* path: the same per-tensor ops issued as multi-tensor
  ``torch._foreach_*`` calls, grouped by (device, dtype), so one C++ call does
  the work of the loop. On CPU a foreach call runs the very same per-tensor
  kernel for each tensor (so every element takes the same vectorised or scalar
  code path as upstream's loop); on CUDA it uses the fused multi-tensor kernel,
  whose per-element arithmetic is checked against the loop by the ``gpu`` tests.

Set ``COMPAT_EMA_FAITHFUL=1`` in the environment, call :func:`set_fast_path`,
or pass ``fast=False`` to rule the fast path out. The fast path falls back to
the faithful loop whenever two destination tensors share memory (tied weights
seen through ``state_dict()``), because the upstream loop applies the update
to such memory twice, in order, and a multi-tensor kernel need not.

Swaps (:func:`swap_`) additionally *exchange storage* instead of copying when
nobody else can see the difference; see :func:`exchangeable`. Set
``COMPAT_EMA_SWAP=copy`` or call :func:`set_exchange_swap` to always copy
(e.g. when a captured CUDA graph reads parameters by raw address).

Hooks that own their destinations (mmcv/mmdet ``ema_*`` buffers) may also
keep the small CPU float32/float64 ones in one flat buffer
(:meth:`TensorPairs.flatten_small_destinations`): the same elementwise ops then
run over the buffer instead of once per tensor (on CPU each op costs a few
microseconds per tensor, which dominates for small tensors). For these dtypes
the vector body and the scalar tail of the CPU kernels round alike, so where an
element sits in the buffer cannot change its result (tested over odd sizes).
Set ``COMPAT_EMA_FLAT=0`` (or :data:`FLAT_MAX_NUMEL` to 0) to keep every
buffer in its own storage. No single-pass (fused or chunked) variant of the
two-pass ``mul_``/``add_`` is used: measured on the reference machine it was
not faster (see ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import operator
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['set_fast_path', 'fast_path_enabled', 'set_exchange_swap', 'exchange_swap_enabled',
           'TensorPairs', 'mul_add_', 'lerp_', 'swa_add_', 'copy_', 'swap_', 'exchangeable',
           'EXCHANGE_MIN_NUMEL', 'FLAT_MAX_NUMEL']

_FAST = os.environ.get('COMPAT_EMA_FAITHFUL', '') in ('', '0')
_EXCHANGE = os.environ.get('COMPAT_EMA_SWAP', '').lower() not in ('copy', '0')
_HAS_FOREACH_LERP = hasattr(torch, '_foreach_lerp_')
_HAS_FOREACH_COPY = hasattr(torch, '_foreach_copy_')
_REDUCED = (torch.bfloat16, torch.float16)
_USE_COUNT = getattr(torch._C, '_storage_Use_Count', None)

def set_fast_path(enabled: bool) -> None:
    """Enable or disable the multi-tensor fast path (and storage exchange) process-wide."""
    global _FAST
    _FAST = bool(enabled)


def fast_path_enabled() -> bool:
    """Whether kernels use the multi-tensor path by default."""
    return _FAST


def set_exchange_swap(enabled: bool) -> None:
    """Allow (True, the default) or forbid storage exchange in the fast :func:`swap_`."""
    global _EXCHANGE
    _EXCHANGE = bool(enabled)


def exchange_swap_enabled() -> bool:
    """Whether the fast :func:`swap_` may exchange storage."""
    return _EXCHANGE


def _use_fast(fast: Optional[bool]) -> bool:
    return _FAST if fast is None else fast


def _aliased(tensors: Sequence[Tensor]) -> bool:
    """True when two non-empty tensors in ``tensors`` start at the same address."""
    ptrs = [t.data_ptr() for t in tensors if t.numel()]
    return len(set(ptrs)) != len(ptrs)


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


#: Two-pass kernels (mul_ then add_) run on batches of about this many bytes of
#: destination, so the second pass finds them in cache (the per-tensor loop gets
#: that for free; one foreach pass over the whole model does not). A tensor larger
#: than this is a batch of its own. Performance only: results do not depend on it.
BATCH_BYTES = 1 << 20


def _batches(dst: List[Tensor], src: List[Tensor]) -> List[Tuple[List[Tensor], List[Tensor]]]:
    out: List[Tuple[List[Tensor], List[Tensor]]] = []
    cur_d: List[Tensor] = []
    cur_s: List[Tensor] = []
    used = 0
    for d, s in zip(dst, src):
        size = d.numel() * d.element_size()
        if cur_d and used + size > BATCH_BYTES:
            out.append((cur_d, cur_s))
            cur_d, cur_s, used = [], [], 0
        cur_d.append(d)
        cur_s.append(s)
        used += size
    if cur_d:
        out.append((cur_d, cur_s))
    return out


def _same_layout(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return all(x.dtype == y.dtype and x.device == y.device for x, y in zip(a, b))


#: Dtypes whose CPU ``mul_`` by a scalar may run on one flat buffer: their scalar
#: tail and vector body round alike, so where a tensor starts in the buffer cannot
#: change a bit (float16/bfloat16 tails differ; see ``tests/test_kernels.py``).
_FLAT_DTYPES = (torch.float32, torch.float64)
_DATA_PTR = Tensor.data_ptr

#: Destinations under this many elements may be re-pointed into a flat buffer by
#: :meth:`TensorPairs.flatten_small_destinations` (where the per-tensor cost of
#: ``mul_`` dominates). Larger ones keep their own storage, which is what lets
#: :func:`swap_` exchange them.
FLAT_MAX_NUMEL = 0 if os.environ.get('COMPAT_EMA_FLAT', '').lower() in ('0', 'off') else 1 << 13


class _FlatSmall:
    """Small CPU destination tensors re-pointed into one flat buffer per dtype.

    Built once by :meth:`TensorPairs.flatten_small_destinations`: each adopted
    destination (a plain, contiguous, exclusively owned CPU float32/float64
    tensor under :data:`FLAT_MAX_NUMEL` elements, the proof
    :func:`exchangeable` uses) gets its values copied into a slice of a new flat
    buffer and its storage re-pointed there (``dst.data = view``), so one
    ``mul_`` on the flat buffer scales all of them. Destinations whose source
    is 1-D come first: their sources are gathered with ``torch.cat`` into a
    scratch buffer (one call per :data:`BATCH_BYTES`, so the scratch is
    bounded) and added (or, in a swap, exchanged) with one op per batch; the
    others get a foreach ``add_``. ``ptrs`` records where each destination must
    still live; a call that finds otherwise drops the plan.
    """

    __slots__ = ('flats', 'dst', 'src', 'ptrs', 'rest', 'rest_groups', 'gathers', 'tail', 'numels',
                 'scratch')

    def __init__(self, pairs: 'TensorPairs'):
        self.flats: List[Tensor] = []
        self.dst: List[Tensor] = []
        self.src: List[Tensor] = []
        #: (sources, destinations, their slice of the flat buffer) per gathered batch
        self.gathers: List[Tuple[List[Tensor], List[Tensor], Tensor, Tensor]] = []
        #: (destinations, sources) added per tensor
        self.tail: Tuple[List[Tensor], List[Tensor]] = ([], [])
        picked = set()
        batches = []
        for dtype in _FLAT_DTYPES:
            idx = [i for i, d in enumerate(pairs.dst)
                   if d.dtype == dtype and d.device.type == 'cpu' and 0 < d.numel() < FLAT_MAX_NUMEL
                   and d.is_contiguous() and _exclusive(d)]
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
            for d_batch, s_batch in _batches(dst[:n1], src[:n1]):
                n = sum(d.numel() for d in d_batch)
                batches.append((s_batch, d_batch, flat[start:start + n]))
                start += n
            self.tail[0].extend(dst[n1:])
            self.tail[1].extend(src[n1:])
        # one scratch buffer shared by all batches: BATCH_BYTES, or one tensor if larger
        self.scratch = torch.empty(max([v.nbytes for _, _, v in batches], default=0), dtype=torch.uint8)
        self.gathers = [(s_batch, d_batch, view, self.scratch[:view.nbytes].view(view.dtype))
                        for s_batch, d_batch, view in batches]
        self.numels = [list(map(_NUMEL, g[0])) for g in self.gathers]
        self.ptrs = list(map(_DATA_PTR, self.dst))
        rest = [i for i in range(len(pairs.dst)) if i not in picked]
        self.rest_groups = list(_groups([pairs.dst[i] for i in rest], [pairs.src[i] for i in rest]).values())
        self.rest = [b for e_list, s_list in self.rest_groups for b in _batches(e_list, s_list)]

    def holds(self) -> bool:
        """Every adopted destination still lives where it was put and every gathered
        source still has its size (a source that changed shape otherwise makes
        ``cat`` or ``add_`` fail, as upstream's ``add_`` does)."""
        return list(map(_DATA_PTR, self.dst)) == self.ptrs and all(
            list(map(_NUMEL, g[0])) == numels for g, numels in zip(self.gathers, self.numels))

    def mul_add_(self, keep: float, momentum: float) -> None:
        for buf in self.flats:
            buf.mul_(keep)
        for s_batch, _, view, scratch in self.gathers:
            torch.cat(s_batch, out=scratch)
            view.add_(scratch, alpha=momentum)
        if self.tail[0]:
            torch._foreach_add_(self.tail[0], self.tail[1], alpha=momentum)

    def lerp_(self, weight: float) -> None:
        for s_batch, _, view, scratch in self.gathers:
            torch.cat(s_batch, out=scratch)
            view.lerp_(scratch, weight)
        if self.tail[0]:
            _lerp_many(self.tail[0], self.tail[1], weight)

    def swa_add_(self, alpha: float) -> None:
        for s_batch, _, view, scratch in self.gathers:
            torch.cat(s_batch, out=scratch)
            view.add_(scratch.sub_(view), alpha=alpha)  # scratch = s - a, as upstream's s - a
        if self.tail[0]:
            diff = torch._foreach_sub(self.tail[1], self.tail[0])
            torch._foreach_add_(self.tail[0], diff, alpha=alpha)

    def swap_batches_(self, batches: Sequence[Tuple[List[Tensor], Tensor, Tensor]]) -> None:
        """Swap gathered batches ``(source .data aliases, destinations, flat slice, scratch)``:
        ``scratch = cat(sources)``, ``sources <- destinations``, ``flat slice <- scratch``."""
        for xs, ds, view, scratch in batches:
            torch.cat(xs, out=scratch)
            torch._foreach_copy_(xs, ds)
            view.copy_(scratch)


_NUMEL = Tensor.numel


def _lerp_many(dst: List[Tensor], src: List[Tensor], weight: float) -> None:
    if _HAS_FOREACH_LERP:
        torch._foreach_lerp_(dst, src, weight)
    else:
        for a, s in zip(dst, src):
            a.lerp_(s, weight)


def _exclusive(t: Tensor) -> bool:
    """``t`` alone holds its whole storage (see :func:`exchangeable`)."""
    return _USE_COUNT is not None and _BASE_USE >= 1 and _owns_exactly(t, t.untyped_storage(), 1)


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

    Hooks that own their destinations (the ``ema_*`` buffers) also call
    :meth:`flatten_small_destinations`, which lets the fast :meth:`mul_add_`
    scale all small CPU destinations with one flat ``mul_``.
    """

    __slots__ = ('dst', 'src', 'groups', 'aliased', 'same_layout', 'batches', 'flatten', '_flat',
                 '_exchanged')

    def __init__(self, dst: Sequence[Tensor], src: Sequence[Tensor]):
        self.dst = list(dst)
        self.src = list(src)
        self.same_layout = _same_layout(self.dst, self.src)
        self.aliased = _aliased(self.dst)
        self.groups = list(_groups(self.dst, self.src).values())
        self.batches = [b for e_list, s_list in self.groups for b in _batches(e_list, s_list)]
        self.flatten = False
        self._flat: Optional[_FlatSmall] = None
        #: pair index -> state left by the last storage exchange of :func:`swap_`
        self._exchanged: Dict[int, tuple] = {}

    def flatten_small_destinations(self) -> 'TensorPairs':
        """Allow the fast path to re-point small CPU destinations into one buffer.

        For the owner of the destinations only (a hook and its ``ema_*``
        buffers, an averaged model and its parameters). On the first fast
        update or swap, every destination that is a plain, contiguous CPU
        float32/float64 tensor under :data:`FLAT_MAX_NUMEL` elements and holds
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
        return _use_fast(fast) and self.same_layout and not self.aliased

    def _flat_plan(self) -> Optional[_FlatSmall]:
        if not self.flatten:
            return None
        if self._flat is None:
            self._flat = _FlatSmall(self)
            if not self._flat.dst:
                self.flatten = False
                self._flat = None
                return None
        if not self._flat.holds():
            self.flatten = False
            self._flat = None
            return None
        return self._flat

    def mul_add_(self, momentum: float, fast: Optional[bool] = None) -> None:
        """See :func:`mul_add_`."""
        keep = 1 - momentum
        with torch.no_grad():
            if not self._fast(fast):
                for e, s in zip(self.dst, self.src):
                    e.mul_(keep).add_(s, alpha=momentum)
                return
            batches = self.batches
            flat = self._flat_plan()
            if flat is not None:
                flat.mul_add_(keep, momentum)
                batches = flat.rest
            # cache-sized batches: each batch's ema is still in cache for add_
            for e_list, s_list in batches:
                if any(e.dtype in _REDUCED for e in e_list):
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
            if not (self._fast(fast) and _HAS_FOREACH_LERP):
                for a, s in zip(self.dst, self.src):
                    a.lerp_(s, weight)
                return
            groups = self.groups
            flat = self._flat_plan()
            if flat is not None:
                flat.lerp_(weight)
                groups = flat.rest_groups
            for a_list, s_list in groups:
                torch._foreach_lerp_(a_list, s_list, weight)

    def swa_add_(self, alpha: float, fast: Optional[bool] = None) -> None:
        """See :func:`swa_add_`."""
        with torch.no_grad():
            if not self._fast(fast):
                for a, s in zip(self.dst, self.src):
                    a.add_(s - a, alpha=alpha)
                return
            batches = self.batches
            flat = self._flat_plan()
            if flat is not None:
                flat.swa_add_(alpha)
                batches = flat.rest
            for a_list, s_list in batches:
                diff = torch._foreach_sub(s_list, a_list)
                torch._foreach_add_(a_list, diff, alpha=alpha)

    def copy_(self, fast: Optional[bool] = None) -> None:
        """See :func:`copy_`."""
        with torch.no_grad():
            if not (self._fast(fast) and _HAS_FOREACH_COPY):
                for d, s in zip(self.dst, self.src):
                    d.copy_(s)
                return
            for d_list, s_list in self.groups:
                torch._foreach_copy_(d_list, s_list)


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


# --------------------------------------------------------------------------- swap

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)

#: Tensors smaller than this (elements) are swapped by copying: for them the
#: checks that make an exchange safe cost more than the three copies.
EXCHANGE_MIN_NUMEL = 1 << 13


def _storage_key(t: Tensor) -> int:
    if hasattr(t, 'untyped_storage'):
        return t.untyped_storage().data_ptr()
    return t.storage().data_ptr()  # torch < 2.0 has no Tensor.untyped_storage


def _baseline_use_count() -> int:
    """Use count of a storage held by exactly one tensor, seen through one live Python
    storage object (the checks hold exactly one per storage they count). The storage
    object is held in a variable: some torch versions (2.6) free a temporary one before
    the count is read, which would make every later check fail by one."""
    if _USE_COUNT is None:
        return -1
    t = torch.empty(1)
    storage = t.untyped_storage()
    return _USE_COUNT(storage._cdata)


_BASE_USE = _baseline_use_count() if _USE_COUNT is not None else -1


def _dense(t: Tensor) -> bool:
    """Non-overlapping and dense: the strides are a permutation of contiguous strides."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _owns_exactly(t: Tensor, storage, holders: int) -> bool:
    """``t`` is a plain dense tensor that spans its whole ``storage`` (the one
    ``untyped_storage()`` object the caller holds), held by ``holders`` tensor
    objects (itself plus known aliases) and by nothing else."""
    if type(t) not in _PLAIN_TYPES or t.layout != torch.strided or t.is_quantized:
        return False
    if t.storage_offset() != 0 or storage.nbytes() != t.numel() * t.element_size():
        return False
    if t.is_conj() or t.is_neg() or not _dense(t):
        return False
    if t.device.type == 'cpu' and storage.is_shared():
        return False  # another process maps it (share_memory / hogwild)
    return _USE_COUNT(storage._cdata) == _BASE_USE + holders - 1


_CUDA: List[bool] = []


def _cuda_available() -> bool:
    if not _CUDA:
        _CUDA.append(torch.cuda.is_available())
    return _CUDA[0]


def exchangeable(x: Tensor, y: Tensor, x_aliases: int = 0, y_aliases: int = 0,
                 _storages=None) -> bool:
    """Whether exchanging the storages of ``x`` and ``y`` is unobservable.

    True only when both are plain (``Tensor``/``Parameter``), strided, dense,
    exactly sized tensors with equal shape, strides, dtype and device, each
    holding its own storage alone (plus ``x_aliases``/``y_aliases`` known
    aliases that the caller re-points), not in shared memory. Views of them,
    flattened/sharded parameters (FSDP, ZeRO bucket views), ``state_dict()``
    results held elsewhere, ``.data`` aliases: all raise the storage's use
    count, so such tensors are copied in place instead, as upstream does.
    Raw-address consumers (captured CUDA graphs) cannot be detected: use
    :func:`set_exchange_swap` to turn exchange off for them.
    """
    if _USE_COUNT is None or _BASE_USE < 1 or x.numel() == 0:
        return False
    if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device or x.stride() != y.stride():
        return False
    if x.device.type == 'cpu' and _cuda_available() and x.is_pinned() != y.is_pinned():
        return False
    xs, ys = _storages if _storages is not None else (x.untyped_storage(), y.untyped_storage())
    if xs.data_ptr() == ys.data_ptr():
        return False
    return _owns_exactly(x, xs, 1 + x_aliases) and _owns_exactly(y, ys, 1 + y_aliases)


def swap_(a: Sequence[Tensor], b: Sequence[Tensor], fast: Optional[bool] = None,
          aliases: Iterable[Tensor] = (), pairs: Optional[TensorPairs] = None) -> None:
    """Exchange the contents of each pair, as upstream's swap loops do.

    Upstream: ``tmp = x.data.clone(); x.data.copy_(y.data); y.data.copy_(tmp)``
    per pair, in order. Pass the *owning* tensors (the ``Parameter`` objects
    and registered buffers), not ``.data`` aliases, to let the fast path
    exchange storages: ``x.data, y.data = y.data, x.data`` costs no memory
    traffic and gives every holder of ``x`` or ``y`` the same values as the
    copies would (:func:`exchangeable` says when that holds; an exchangeable
    tensor shares memory with no other tensor, so exchanging it out of order
    cannot change any other pair). ``aliases`` are detached tensors that must
    keep sharing storage with an owner they alias (mmdet's ``state_dict()``-based
    tracking, mmengine's ``avg_parameters``): they are re-pointed after the
    exchange. Tensors under :data:`EXCHANGE_MIN_NUMEL` elements are never
    exchanged (for them the checks cost more than the copies).

    Every other pair is copied. On CUDA (and on CPU with
    :data:`BATCH_COPIES_ON_CPU`) the fast path copies them with three
    multi-tensor copies per batch of about :data:`BATCH_BYTES` (so the scratch
    is bounded) when they are contiguous and no two of them overlap in memory:
    then no pair can see another's copy and the order is irrelevant. Pairs
    whose ``b`` tensor sits in the flat buffer of ``pairs`` (a
    :class:`TensorPairs` after :meth:`~TensorPairs.flatten_small_destinations`,
    with the same tensors in ``a`` as its sources) are swapped a batch at a
    time (``cat`` of the sources, one foreach copy, one flat copy); ``pairs``
    also remembers each exchange, so the next swap of the same objects only
    re-checks that every premise of :func:`exchangeable` still holds. Otherwise
    (tied weights listed twice, views of one buffer, flattened parameters) it
    runs upstream's clone-and-copy loop in order, so they end exactly as
    upstream leaves them, with one clone at a time of transient memory.
    """
    fast = _use_fast(fast)
    with torch.no_grad():
        if not fast:
            for x, y in zip(a, b):
                _copy_swap(x.data, y.data)
            return
        xs, ys = list(a), list(b)
        n = min(len(xs), len(ys))
        flat = pairs._flat_plan() if pairs is not None and pairs._fast(True) else None
        batches, in_flat = _flat_swap_batches(flat, xs, ys) if flat is not None else ([], set())
        rest = [i for i in range(n) if i not in in_flat] if in_flat else range(n)
        held: Dict[int, Tuple[Tensor, Tensor]] = {}
        # no storage use counts (torch < 2.0): nothing is provably exchangeable, always copy
        if _EXCHANGE and _USE_COUNT is not None:
            alias_map: Optional[Dict[int, List[Tensor]]] = None
            memos = pairs._exchanged if pairs is not None else {}
            kept = []
            for i, numel in zip(rest, map(_NUMEL, [xs[i] for i in rest])):
                if numel >= EXCHANGE_MIN_NUMEL:
                    memo = memos.pop(i, None)
                    if memo is not None:
                        memo = _exchange_again(memo, xs[i], ys[i])
                    if memo is None:
                        if alias_map is None:
                            alias_map = {}
                            for t in aliases:
                                if t.numel() >= EXCHANGE_MIN_NUMEL:  # aliases of smaller owners are never needed
                                    alias_map.setdefault(_storage_key(t), []).append(t)
                        memo = _try_exchange(xs[i], ys[i], alias_map)
                    if memo is not None:
                        memos[i] = memo
                        continue
                    # hold ``.data`` aliases of this pair until its copy: they raise the
                    # storages' use counts, so no later pair can exchange them first
                    held[i] = xs[i].data, ys[i].data
                kept.append(i)
            rest = kept
        batch_copies = _HAS_FOREACH_COPY and rest and (
            BATCH_COPIES_ON_CPU or all(xs[i].device.type != 'cpu' for i in rest))
        if batches or batch_copies:
            copy_x = [held[i][0] if i in held else xs[i].data for i in rest]
            copy_y = [held[i][1] if i in held else ys[i].data for i in rest]
            gathered = [t for batch in batches for t in batch[0]] + [batch[2] for batch in batches]
            if _disjoint_contiguous(copy_x + copy_y + gathered):
                if batches:
                    flat.swap_batches_(batches)
                if batch_copies:
                    for bx, by in _batches(copy_x, copy_y):
                        tmp = list(map(torch.empty_like, bx))
                        torch._foreach_copy_(tmp, bx)
                        torch._foreach_copy_(bx, by)
                        torch._foreach_copy_(by, tmp)
                else:
                    for xd, yd in zip(copy_x, copy_y):
                        _copy_swap(xd, yd)
                return
            rest = sorted(set(rest) | in_flat)
        # upstream's loop, in order, over every pair not exchanged
        for i in rest:
            if i in held:
                _copy_swap(*held[i])
            else:
                _copy_swap(xs[i].data, ys[i].data)


def _flat_swap_batches(flat: _FlatSmall, xs: List[Tensor], ys: List[Tensor]):
    """The gathered batches of ``flat`` whose every destination is in ``ys`` (or every one
    in ``xs``) paired with its own source on the other side: ``(batches with .data
    sources, their pair indices)``. A batch swap gives both sides the other's values, so
    which side the destinations are on does not matter (it only runs when no two
    tensors overlap, where upstream's order cannot matter either)."""
    pos_y = {id(t): i for i, t in enumerate(ys)}
    pos_x = None
    batches, taken = [], set()
    for s_batch, d_batch, view, scratch in flat.gathers:
        idx = [pos_y.get(id(d)) for d in d_batch]
        other = xs
        if None in idx:
            if pos_x is None:
                pos_x = {id(t): i for i, t in enumerate(xs)}
            idx = [pos_x.get(id(d)) for d in d_batch]
            other = ys
        if None in idx or not all(other[i] is s for i, s in zip(idx, s_batch)):
            continue
        batches.append((list(map(_DATA, s_batch)), d_batch, view, scratch))
        taken.update(idx)
    return batches, taken


#: Copy-swap independent CPU pairs with foreach copies too. Off: on CPU the per-tensor
#: allocation of the scratch costs what the loop's clone does, so it measured no
#: faster (``benchmarks/RESULTS.md``); on other devices it saves three launches per pair.
BATCH_COPIES_ON_CPU = False


def _copy_swap(xd: Tensor, yd: Tensor) -> None:
    """Upstream's swap of one pair: ``tmp = x.clone(); x.copy_(y); y.copy_(tmp)``."""
    tmp = xd.clone()
    xd.copy_(yd)
    yd.copy_(tmp)


def _try_exchange(x: Tensor, y: Tensor, alias_map: Dict[int, List[Tensor]]):
    """Exchange the storages of ``x`` and ``y`` (re-pointing their aliases) if unobservable.

    Returns None if not, else the state left behind, for :func:`_exchange_again`."""
    storages = x.untyped_storage(), y.untyped_storage()
    xa = [t for t in alias_map.get(storages[0].data_ptr(), ()) if t is not x]
    ya = [t for t in alias_map.get(storages[1].data_ptr(), ()) if t is not y]
    ok = all(_same_view(t, x) for t in xa) and all(_same_view(t, y) for t in ya) \
        and exchangeable(x, y, len(xa), len(ya), storages)
    del storages
    if not ok:
        return None
    before = (x, y, xa, ya, x.data_ptr(), y.data_ptr(), x.size(), x.stride(), x.dtype,
              x.untyped_storage().nbytes(), y.untyped_storage().nbytes())
    _exchange(x, y, xa, ya)
    return _after_exchange(before)


def _exchange(x: Tensor, y: Tensor, xa: List[Tensor], ya: List[Tensor]) -> None:
    x_data, y_data = x.data, y.data
    x.data = y_data
    y.data = x_data
    for t in xa:
        t.data = y_data
    for t in ya:
        t.data = x_data


def _after_exchange(before: tuple) -> tuple:
    """The state an exchange leaves, from the state it found: the storages (addresses and
    sizes) changed sides, each with its aliases; shape, strides and dtype are shared."""
    x, y, xa, ya, xp, yp, size, stride, dtype, xn, yn = before
    return (x, y, xa, ya, yp, xp, size, stride, dtype, yn, xn)


def _exchange_again(memo: tuple, x: Tensor, y: Tensor):
    """Repeat an exchange of this very pair if it is provably still in the state the last
    one left (same objects, addresses, storage sizes, shape, strides, dtype; the same
    holders by use count; aliases still on their storage; not in shared memory): every
    premise :func:`exchangeable` checked still holds. Returns the new state, or None."""
    mx, my, xa, ya, xp, yp, size, stride, dtype, xn, yn = memo
    if mx is not x or my is not y or x.data_ptr() != xp or y.data_ptr() != yp:
        return None
    if x.dtype is not dtype or y.dtype is not dtype or x.size() != size or y.size() != size \
            or x.stride() != stride or y.stride() != stride:
        return None
    xs, ys = x.untyped_storage(), y.untyped_storage()
    if xs.nbytes() != xn or ys.nbytes() != yn or \
            _USE_COUNT(xs._cdata) != _BASE_USE + len(xa) or _USE_COUNT(ys._cdata) != _BASE_USE + len(ya):
        return None
    if x.is_cpu and (xs.is_shared() or ys.is_shared()):
        return None
    del xs, ys
    if xa and any(t.data_ptr() != xp for t in xa) or ya and any(t.data_ptr() != yp for t in ya):
        return None
    _exchange(x, y, xa, ya)
    return _after_exchange(memo)


def _disjoint_contiguous(tensors: Sequence[Tensor]) -> bool:
    """All ``tensors`` are contiguous and no two of them share a byte."""
    if not all(map(_IS_CONTIGUOUS, tensors)):
        return False
    end = 0
    for start, size in sorted(zip(map(_DATA_PTR, tensors), map(_NBYTES, tensors))):
        if size:
            if start < end:
                return False
            end = start + size
    return True


_IS_CONTIGUOUS = Tensor.is_contiguous
_NBYTES = operator.attrgetter('nbytes')
_DATA = operator.attrgetter('data')


def _same_view(t: Tensor, owner: Tensor) -> bool:
    """``t`` views exactly the same elements as ``owner``."""
    return (t.data_ptr() == owner.data_ptr() and t.shape == owner.shape
            and t.stride() == owner.stride() and t.dtype == owner.dtype)
