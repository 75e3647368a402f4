"""Which side of an mmcv 1.x / mmdet 2.x checkpoint holds the EMA (no upstream counterpart).

mmcv's ``EMAHook`` and mmdet's ``BaseEMAHook`` swap the model's parameters
with their ``ema_*`` buffers at every epoch end. ``CheckpointHook`` (priority
NORMAL, registered before custom hooks) saves at the same call, so a hook at
NORMAL saves *before* its swap (model keys raw, ``ema_*`` EMA) and a hook at a
priority number below 50 (49 in mmdet's YOLOX and mmcls configs) saves
*after* it (model keys EMA, ``ema_*`` raw). The file does not record the
priority. :func:`decide_side` uses every evidence a file can hold, in this
order, and returns ``None`` when none decides (the callers then refuse rather
than guess):

1. the runner kind: ``IterBasedRunner`` never swaps (nor does a checkpoint
   saved by iteration inside an epoch runner);
2. the hook priority given by the user;
3. compat_ema's own record, ``meta['compat_ema']``, while it still matches;
4. step counters: an integer buffer averaged by mmdet (``skip_buffers=False``)
   is swapped but never averaged, so the side with the stale
   ``num_batches_tracked`` is the EMA side;
5. the config saved in ``meta`` (mmdet/mmcls training tools save it): the EMA
   hook's ``priority``, NORMAL when the entry has none (mmcv's default);
6. the values themselves: when both sides are bitwise equal (no update yet),
   the side does not matter.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .errors import CheckpointError

__all__ = ['decide_side', 'config_ema_priority', 'UNKNOWN_SIDE_HELP']

#: what the refusal tells the user to do, and which evidence would have decided
UNKNOWN_SIDE_HELP = (
    'pass --source-priority NORMAL (the EMA hook ran after CheckpointHook: ema_* keys hold the '
    'EMA) or --source-priority 49 (it ran before: model keys hold the EMA); evidence that would '
    'have decided: the training config in meta.config naming the EMA hook, an integer buffer '
    '(num_batches_tracked) averaged by an mmdet hook with skip_buffers=False, an '
    'IterBasedRunner or iter_N.pth checkpoint, or a compat_ema record in meta')

_PRIORITY_RE = re.compile(r"type=['\"](\w*EMAHook)['\"][^}\)]*?priority=['\"]?(\w+)")


def config_ema_priority(text: str) -> Optional[Tuple[str, Any, bool]]:
    """``(hook type, priority, written)`` of the one EMA hook in a saved config text.

    The text is read, never executed (:mod:`compat_ema.migrate.configparse`).
    ``written`` is False when the entry has no ``priority`` key (mmcv's
    ``register_custom_hooks`` then uses NORMAL). None when the config names no
    EMA hook, several, or one whose priority cannot be read.
    """
    from ..migrate.configparse import ConfigError, Unevaluated, parse_source
    from ..migrate.hookspec import is_ema_like
    try:
        hooks = parse_source(text, 'meta.config').values.get('custom_hooks')
    except (ConfigError, RecursionError):
        hooks = None
    if isinstance(hooks, dict):
        hooks = [hooks]
    if isinstance(hooks, (list, tuple)):
        emas = [h for h in hooks if isinstance(h, dict) and is_ema_like(h.get('type'))]
        if len(emas) != 1:
            return None
        (entry,) = emas
        priority = entry.get('priority', 'NORMAL')
        if isinstance(priority, Unevaluated):
            return None
        return str(entry['type']), priority, 'priority' in entry
    m = _PRIORITY_RE.search(text)
    if m:
        return m.group(1), m.group(2), True
    return None


def decide_side(sd, pairs: Dict[str, str], meta: Dict[str, Any], by_epoch: Optional[bool],
                explicit_priority, config_text: str, written_as: Dict[str, Any],
                ev: List[str]) -> Optional[bool]:
    """True: model keys hold the EMA (the epoch-end swap came first); False: ``ema_*`` do;
    None: nothing in the file decides. Appends the deciding evidence to ``ev``.

    ``by_epoch``: False for an iteration-based runner (never swaps), None when
    the runner kind is unknown (a bare state dict).
    """
    from .formats import COMPAT_KEY, swapped_by_priority

    def say(swapped: bool, why: str) -> bool:
        ev.append(f'EMA side: {"model keys" if swapped else "ema_* buffers"} ({why})')
        return swapped

    if by_epoch is False:
        swapped = say(False, 'IterBasedRunner never swaps, docs/runner-behaviour.md#mmcv-emahook')
        if explicit_priority is not None:
            ev.append('  (the given priority does not matter under IterBasedRunner)')
        return swapped
    if explicit_priority is not None:
        swapped = swapped_by_priority(explicit_priority)
        return say(swapped, f'given hook priority {explicit_priority!r} '
                            f'{"<" if swapped else ">="} CheckpointHook 50')
    if written_as.get('ema_in_params') is not None:
        return say(bool(written_as['ema_in_params']), f'meta.{COMPAT_KEY}: compat_ema wrote it so')
    for m, e in pairs.items():
        a, b = sd[m], sd[e]
        if not a.is_floating_point() and a.numel() == 1 and int(a) != int(b):
            return say(int(a) < int(b), f'step counter {m} = {int(a)} vs {e} = {int(b)}: the '
                                        'stale integer copy is the EMA side (mmdet never '
                                        'averages integer buffers, '
                                        'docs/runner-behaviour.md#mmdet-checkpoint)')
    found = config_ema_priority(config_text) if config_text else None
    if found is not None:
        kind, priority, written = found
        try:
            swapped = swapped_by_priority(priority)
        except CheckpointError:
            swapped = None  # type: ignore[assignment]
        if swapped is not None:
            how = f'priority={priority!r}' if written else 'no priority: NORMAL, mmcv\'s default'
            return say(swapped, f'meta.config: {kind} {how}')
    import torch
    if pairs and all(torch.equal(sd[m], sd[e]) for m, e in pairs.items()):
        return say(False, 'both sides are bitwise equal (no EMA update yet): the side does '
                          'not matter')
    return None
