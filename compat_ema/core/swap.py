"""``swap_``: upstream's swap of parameters and EMA copies, without its clone and copies
where nobody could see the difference.

Upstream swaps each pair with ``tmp = x.clone(); x.copy_(y); y.copy_(tmp)``.
Here a pair of exclusively owned tensors (:mod:`compat_ema.core.ownership`)
exchanges storages instead, a repeated exchange of the same objects re-checks
its premises cheaply, pairs in a flat buffer (:mod:`compat_ema.core.flat`) move
a batch at a time, and everything else is copied as upstream does.
"""
from __future__ import annotations

import operator
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .batching import HAS_FOREACH_COPY, batches
from .flags import exchange_swap_enabled, use_fast
from .flat import FlatSmall
from .ownership import BASE_USE, USE_COUNT, exchangeable, same_view, storage_key
from .pairs import TensorPairs

__all__ = ['EXCHANGE_MIN_NUMEL', 'BATCH_COPIES_ON_CPU', 'swap_']

#: Tensors smaller than this (elements) are swapped by copying: for them the
#: checks that make an exchange safe cost more than the three copies.
EXCHANGE_MIN_NUMEL = 1 << 13

#: Copy-swap independent CPU pairs with foreach copies too. Off: on CPU the per-tensor
#: allocation of the scratch costs what the loop's clone does, so it measured no
#: faster (``benchmarks/RESULTS.md``); on other devices it saves three launches per pair.
BATCH_COPIES_ON_CPU = False

#: Remember each exchange in the ``pairs`` given to :func:`swap_`, so that swapping the same
#: objects back re-checks only what could have changed (off: the full proof every time).
EXCHANGE_MEMO = True


_NUMEL = Tensor.numel
_DATA_PTR = Tensor.data_ptr
_IS_CONTIGUOUS = Tensor.is_contiguous
_NBYTES = operator.attrgetter('nbytes')
_DATA = operator.attrgetter('data')


def swap_(a: Sequence[Tensor], b: Sequence[Tensor], fast: Optional[bool] = None,
          aliases: Iterable[Tensor] = (), pairs: Optional[TensorPairs] = None) -> None:
    """Exchange the contents of each pair, as upstream's swap loops do.

    Upstream: ``tmp = x.data.clone(); x.data.copy_(y.data); y.data.copy_(tmp)``
    per pair, in order. Pass the *owning* tensors (the ``Parameter`` objects
    and registered buffers), not ``.data`` aliases, to let the fast path
    exchange storages: ``x.data, y.data = y.data, x.data`` costs no memory
    traffic and gives every holder of ``x`` or ``y`` the same values as the
    copies would (:func:`~compat_ema.core.ownership.exchangeable` says when that holds; an
    exchangeable tensor shares memory with no other tensor, so exchanging it out of order
    cannot change any other pair). ``aliases`` are detached tensors that must
    keep sharing storage with an owner they alias (mmdet's ``state_dict()``-based
    tracking, mmengine's ``avg_parameters``): they are re-pointed after the
    exchange. Tensors under :data:`EXCHANGE_MIN_NUMEL` elements are never
    exchanged (for them the checks cost more than the copies).

    Every other pair is copied. On CUDA (and on CPU with
    :data:`BATCH_COPIES_ON_CPU`) the fast path copies them with three
    multi-tensor copies per batch of about :data:`~compat_ema.core.batching.BATCH_BYTES` (so the scratch
    is bounded) when they are contiguous and no two of them overlap in memory:
    then no pair can see another's copy and the order is irrelevant. Pairs
    whose ``b`` tensor sits in the flat buffer of ``pairs`` (a
    :class:`~compat_ema.core.kernels.TensorPairs` after its ``flatten_small_destinations()``,
    with the same tensors in ``a`` as its sources) are swapped a batch at a
    time (``cat`` of the sources, one foreach copy, one flat copy); ``pairs``
    also remembers each exchange, so the next swap of the same objects only
    re-checks that every premise of ``exchangeable`` still holds. Otherwise
    (tied weights listed twice, views of one buffer, flattened parameters) it
    runs upstream's clone-and-copy loop in order, so they end exactly as
    upstream leaves them, with one clone at a time of transient memory.
    """
    fast = use_fast(fast)
    with torch.no_grad():
        if not fast:
            for x, y in zip(a, b):
                _copy_swap(x.data, y.data)
            return
        xs, ys = list(a), list(b)
        n = min(len(xs), len(ys))
        flat = pairs._flat_plan() if pairs is not None and pairs._fast(True) else None
        chosen, in_flat = _flat_swap_batches(flat, xs, ys) if flat is not None else ([], set())
        rest = [i for i in range(n) if i not in in_flat] if in_flat else range(n)
        held: Dict[int, Tuple[Tensor, Tensor]] = {}
        # no storage use counts (torch < 2.0): nothing is provably exchangeable, always copy
        if exchange_swap_enabled() and USE_COUNT is not None:
            alias_map: Optional[Dict[int, List[Tensor]]] = None
            memos = pairs._exchanged if pairs is not None and EXCHANGE_MEMO else {}
            kept = []
            for i, numel in zip(rest, map(_NUMEL, [xs[i] for i in rest])):
                if numel >= EXCHANGE_MIN_NUMEL:
                    memo = memos.pop(i, None)
                    if memo is not None:
                        memo = _exchange_again(memo, xs[i], ys[i])
                    if memo is None:
                        if alias_map is None:
                            alias_map = {}
                            for t in aliases:  # aliases of smaller owners are never needed
                                if t.numel() >= EXCHANGE_MIN_NUMEL:
                                    alias_map.setdefault(storage_key(t), []).append(t)
                        memo = _try_exchange(xs[i], ys[i], alias_map)
                    if memo is not None:
                        memos[i] = memo
                        continue
                    # hold ``.data`` aliases of this pair until its copy: they raise the
                    # storages' use counts, so no later pair can exchange them first
                    held[i] = xs[i].data, ys[i].data
                kept.append(i)
            rest = kept
        batch_copies = HAS_FOREACH_COPY and rest and (
            BATCH_COPIES_ON_CPU or all(xs[i].device.type != 'cpu' for i in rest))
        if chosen or batch_copies:
            copy_x = [held[i][0] if i in held else xs[i].data for i in rest]
            copy_y = [held[i][1] if i in held else ys[i].data for i in rest]
            gathered = [t for batch in chosen for t in batch[0]] + [batch[2] for batch in chosen]
            if _disjoint_contiguous(copy_x + copy_y + gathered):
                if chosen and flat is not None:
                    flat.swap_batches_(chosen)
                if batch_copies:
                    for bx, by in batches(copy_x, copy_y):
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


def _flat_swap_batches(flat: FlatSmall, xs: List[Tensor], ys: List[Tensor]):
    """The gathered batches of ``flat`` whose every destination is in ``ys`` (or every one
    in ``xs``) paired with its own source on the other side: ``(batches with .data
    sources, their pair indices)``. A batch swap gives both sides the other's values, so
    which side the destinations are on does not matter (it only runs when no two
    tensors overlap, where upstream's order cannot matter either)."""
    pos_y = {id(t): i for i, t in enumerate(ys)}
    pos_x = None
    chosen, taken = [], set()
    for s_batch, d_batch, view, scratch in flat.gathers:
        idx = [pos_y.get(id(d)) for d in d_batch]
        other = xs
        if None in idx:
            if pos_x is None:
                pos_x = {id(t): i for i, t in enumerate(xs)}
            idx = [pos_x.get(id(d)) for d in d_batch]
            other = ys
        if None in idx or not all(other[i] is s for i, s in zip(idx, s_batch)):  # type: ignore[index]
            continue
        chosen.append((list(map(_DATA, s_batch)), d_batch, view, scratch))
        taken.update(idx)
    return chosen, taken


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
    ok = all(same_view(t, x) for t in xa) and all(same_view(t, y) for t in ya) \
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
    premise :func:`~compat_ema.core.ownership.exchangeable` checked still holds. Returns the
    new state, or None."""
    mx, my, xa, ya, xp, yp, size, stride, dtype, xn, yn = memo
    if mx is not x or my is not y or x.data_ptr() != xp or y.data_ptr() != yp:
        return None
    if x.dtype is not dtype or y.dtype is not dtype or x.size() != size or y.size() != size \
            or x.stride() != stride or y.stride() != stride:
        return None
    xs, ys = x.untyped_storage(), y.untyped_storage()
    assert USE_COUNT is not None  # a memo exists only where use counts do
    if xs.nbytes() != xn or ys.nbytes() != yn or \
            USE_COUNT(xs._cdata) != BASE_USE + len(xa) or USE_COUNT(ys._cdata) != BASE_USE + len(ya):
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
