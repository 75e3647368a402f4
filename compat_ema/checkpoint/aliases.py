"""Tied weights in checkpoints: keys that are one tensor under two names (no upstream counterpart).

A model with a tied parameter (``head.weight = embed.weight``) lists it under
both names in ``state_dict()``, but once in ``named_parameters()``. The hooks
differ in which of the two they see:

* mmcv 1.x ``EMAHook`` and mmdet 2.x ``BaseEMAHook(skip_buffers=True)`` track
  ``named_parameters()``: one ``ema_*`` buffer, named after the *first* name;
* mmdet 2.x ``BaseEMAHook(skip_buffers=False)`` tracks ``state_dict()``: one
  buffer per name, and its epoch-end swap runs twice on the one storage, so
  after a swap the two buffers disagree (one holds the raw weights, the
  other the EMA) and the model keeps the EMA after the swap back;
* mmengine 0.10.7 averages ``named_parameters()`` (or ``state_dict()`` with
  ``update_buffers=True``) of a deep copy, which keeps the tie.

``torch.save`` keeps storage sharing, so the file itself says which keys are
tied: same storage, same offset, shape and stride. :func:`alias_groups` finds
them; two keys that share a storage as *different* views cannot be converted
exactly and are refused.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch

from .errors import CheckpointError

__all__ = ['alias_groups']


def _storage_key(t: torch.Tensor) -> Tuple[int, str]:
    # torch < 2.0 has no untyped_storage(); the typed storage answers the same
    st = t.untyped_storage() if hasattr(t, 'untyped_storage') else t.storage()
    return st.data_ptr(), str(t.device)


def alias_groups(sd: Mapping[str, torch.Tensor]) -> List[List[str]]:
    """Groups (two keys or more, in ``sd`` order) of keys that are the same tensor.

    Raises :class:`CheckpointError` when two keys share a storage as different
    views (a slice of another tensor): neither layout can say how to average it.
    """
    by_storage: Dict[Tuple[int, str], List[str]] = {}
    for k, t in sd.items():
        if t.numel() == 0:
            continue
        by_storage.setdefault(_storage_key(t), []).append(k)
    groups = []
    for keys in by_storage.values():
        if len(keys) < 2:
            continue
        first = sd[keys[0]]
        view = (first.storage_offset(), tuple(first.shape), first.stride(), first.dtype)
        other = [k for k in keys[1:] if (sd[k].storage_offset(), tuple(sd[k].shape),
                                         sd[k].stride(), sd[k].dtype) != view]
        if other:
            raise CheckpointError(f'{keys[0]!r} and {other[0]!r} are different views of one '
                                  'storage (not a tied weight): their EMA cannot be converted '
                                  'exactly')
        groups.append(keys)
    return groups
