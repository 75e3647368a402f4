"""Storage-ownership proofs: when re-pointing a tensor's storage cannot be observed.

A tensor's storage may be exchanged (:mod:`compat_ema.core.swap`) or moved
into a flat buffer (:mod:`compat_ema.core.flat`) only when no other object
holds it: the storage's use count (``torch._C._storage_Use_Count``, a private
torch API of torch >= 2.0) equals the holders the caller knows. The API is used
only if :func:`probe_use_count` finds it and sees it count holders as this
module assumes (one more per tensor that shares the storage, back down when it
is freed); otherwise :data:`USE_COUNT` is None, nothing is provably exclusive,
and every caller keeps upstream's in-place copies (the fallback the torch 1.13
tox environment runs). ``COMPAT_EMA_USE_COUNT=0`` forces the fallback.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from . import torch_features

__all__ = ['USE_COUNT', 'BASE_USE', 'exchangeable', 'exclusive', 'owns_exactly', 'probe_use_count',
           'same_view', 'storage_key']

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def storage_key(t: Tensor) -> int:
    """The address of ``t``'s storage."""
    return torch_features.storage_of(t).data_ptr()


def probe_use_count(api=None) -> Tuple[Optional[Callable[[int], int]], int]:
    """``(use count function, baseline)`` if torch's private storage use count is present
    and behaves as the ownership proofs assume, else ``(None, -1)``.

    The baseline is the count of a storage held by exactly one tensor, seen through one
    live Python storage object (the checks hold exactly one per storage they count; the
    object is held in a variable because some torch versions (2.6) free a temporary one
    before the count is read). The probe then checks that a view, a second tensor on the
    storage and a ``.data`` alias each add one, and that freeing them gives it back.
    """
    if os.environ.get('COMPAT_EMA_USE_COUNT', '').lower() in ('0', 'off'):
        return None, -1
    count = torch_features.STORAGE_USE_COUNT if api is None else api
    if count is None or not torch_features.UNTYPED_STORAGE:
        return None, -1
    try:
        t = torch.empty(4)
        storage = t.untyped_storage()
        base = count(storage._cdata)
        view = t[1:]
        with_view = count(storage._cdata)
        alias = t.data
        with_alias = count(storage._cdata)
        del view, alias
        after = count(storage._cdata)
        ok = isinstance(base, int) and base >= 1 and (with_view, with_alias, after) == (
            base + 1, base + 2, base)
    except Exception:  # noqa: BLE001 - any failure of a private API means: do not use it
        return None, -1
    return (count, base) if ok else (None, -1)


USE_COUNT, BASE_USE = probe_use_count()


def dense(t: Tensor) -> bool:
    """Non-overlapping and dense: the strides are a permutation of contiguous strides."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def owns_exactly(t: Tensor, storage, holders: int) -> bool:
    """``t`` is a plain dense tensor that spans its whole ``storage`` (the one
    ``untyped_storage()`` object the caller holds), held by ``holders`` tensor
    objects (itself plus known aliases) and by nothing else."""
    if type(t) not in _PLAIN_TYPES or t.layout != torch.strided or t.is_quantized:
        return False
    if t.storage_offset() != 0 or storage.nbytes() != t.numel() * t.element_size():
        return False
    if t.is_conj() or t.is_neg() or not dense(t):
        return False
    if t.device.type == 'cpu' and storage.is_shared():
        return False  # another process maps it (share_memory / hogwild)
    return USE_COUNT is not None and USE_COUNT(storage._cdata) == BASE_USE + holders - 1


def exclusive(t: Tensor) -> bool:
    """``t`` alone holds its whole storage (see :func:`exchangeable`)."""
    return USE_COUNT is not None and BASE_USE >= 1 and owns_exactly(t, t.untyped_storage(), 1)


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
    :func:`compat_ema.core.kernels.set_exchange_swap` to turn exchange off for them.
    """
    if USE_COUNT is None or BASE_USE < 1 or x.numel() == 0:
        return False
    if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device or x.stride() != y.stride():
        return False
    if x.device.type == 'cpu' and _cuda_available() and x.is_pinned() != y.is_pinned():
        return False
    xs, ys = _storages if _storages is not None else (x.untyped_storage(), y.untyped_storage())
    if xs.data_ptr() == ys.data_ptr():
        return False
    return owns_exactly(x, xs, 1 + x_aliases) and owns_exactly(y, ys, 1 + y_aliases)


def same_view(t: Tensor, owner: Tensor) -> bool:
    """``t`` views exactly the same elements as ``owner``."""
    return (t.data_ptr() == owner.data_ptr() and t.shape == owner.shape
            and t.stride() == owner.stride() and t.dtype == owner.dtype)
