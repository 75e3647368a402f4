"""Undo mmcv/mmdet's ``ema_`` buffer naming (no upstream counterpart).

mmcv 1.x ``EMAHook`` and mmdet 2.x ``BaseEMAHook`` register, on the top-level
module, one buffer per tracked tensor named ``'ema_' + name.replace('.', '_')``.
The renaming loses information (``a.b_c`` and ``a_b.c`` both become
``ema_a_b_c``), so the model key a buffer belongs to is found by matching the
state dict's own keys (or an explicit model key list) against that rule, by
elimination; an ambiguous match is an error naming the keys.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import CheckpointError

__all__ = ['ema_name', 'match_ema_keys']


def ema_name(key: str) -> str:
    """The buffer name mmcv/mmdet give the EMA copy of ``key``: ``ema_<key with _ for .>``."""
    return 'ema_' + key.replace('.', '_')


def _check_unique(keys: Sequence[str], what: str) -> None:
    seen: set = set()
    dup = [k for k in keys if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    if dup:
        raise CheckpointError(f'duplicate {what}: {sorted(set(dup))}')


def match_ema_keys(keys: Sequence[str], model_keys: Optional[Iterable[str]] = None
                   ) -> Tuple[List[str], "OrderedDict[str, str]"]:
    """Split legacy ``state_dict`` keys into model keys and their EMA buffers.

    Returns ``(model_keys, pairs)`` where ``pairs`` maps a model key to its
    ``ema_*`` key, in model-key order. With ``model_keys`` given (the model's
    ``state_dict()`` keys), it is used as is; otherwise EMA buffers are the
    dot-free ``ema_*`` keys that pair with another key, found by elimination
    (a model key may itself start with ``ema_``). Raises
    :class:`CheckpointError` when two model keys rename to the same buffer, or
    an ``ema_*`` buffer pairs with no model key.
    """
    keys = list(keys)
    _check_unique(keys, 'state_dict keys')
    present = set(keys)
    if model_keys is not None:
        model = list(model_keys)
        _check_unique(model, 'model keys')
        missing = [k for k in model if k not in present]
        if missing:
            raise CheckpointError(f'model keys missing from state_dict: {missing}')
        candidates = [k for k in keys if k not in set(model)]
    else:
        # EMA buffers live on the top-level module: no dot in their names
        candidates = [k for k in keys if k.startswith('ema_') and '.' not in k]
        model = [k for k in keys if k not in set(candidates)]
        # elimination: an ema_* key whose own EMA buffer is present is a model key
        changed = True
        while changed:
            changed = False
            cand_set = set(candidates)
            for c in list(candidates):
                if ema_name(c) in cand_set and ema_name(c) != c:
                    # c is a model key only if nothing else claims it as its buffer
                    claimed = [m for m in model + candidates if m != c and ema_name(m) == c]
                    if not claimed:
                        candidates.remove(c)
                        model.append(c)
                        changed = True
        order = {k: i for i, k in enumerate(keys)}
        model.sort(key=order.__getitem__)
    by_buffer: Dict[str, List[str]] = {}
    for m in model:
        by_buffer.setdefault(ema_name(m), []).append(m)
    ambiguous = {b: ms for b, ms in by_buffer.items() if len(ms) > 1 and b in present}
    if ambiguous:
        b, ms = next(iter(sorted(ambiguous.items())))
        raise CheckpointError(f'ambiguous EMA key {b!r}: model keys {ms} all rename to it '
                              '(mmcv/mmdet replace dots by underscores); cannot tell which '
                              'tensor it averages')
    pairs: "OrderedDict[str, str]" = OrderedDict()
    for m in model:
        b = ema_name(m)
        if b in present and b not in model:
            pairs[m] = b
    orphans = [c for c in candidates if c not in set(pairs.values())]
    if orphans:
        raise CheckpointError(f'EMA keys {orphans} match no model key in state_dict '
                              "(expected 'ema_' + model key with dots replaced by underscores)")
    return model, pairs
