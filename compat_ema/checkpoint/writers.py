"""Build checkpoint dicts in each generation's layout from an :class:`EMACheckpoint`.

The inverse of :mod:`.formats`. What a target layout cannot hold (the source's
meta, key order, EMA buffer names, side, counters) is carried under
``meta['compat_ema']`` so that converting back restores the source exactly;
it is used only while the file's own counters and keys still match it.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core.atomic import write_new
from .errors import CheckpointError
from .formats import BUFFER_SUFFIXES, COMPAT_KEY, EMACheckpoint, guess_param_keys, \
    swapped_by_priority
from .keys import ema_name

__all__ = ['to_mmengine', 'to_legacy', 'CARRY_VERSION', 'atomic_save']

CARRY_VERSION = 1
#: the one rule for a checkpoint without EMA state, whatever the direction
NO_EMA_NOTE = ('no EMA state in the source: written without EMA state (an EMA hook that resumes '
               'it starts its EMA from these weights, as it would from the source)')
_PLAIN = (str, int, float, bool, type(None))


def _is_plain(obj: Any) -> bool:
    if isinstance(obj, _PLAIN):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_is_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, _PLAIN) and _is_plain(v) for k, v in obj.items())
    return False


def _carry(ck: EMACheckpoint, notes: List[str]) -> Dict[str, Any]:
    meta = {k: v for k, v in ck.meta.items() if k != COMPAT_KEY}
    dropped = [k for k, v in meta.items() if not _is_plain(v)]
    for k in dropped:
        meta.pop(k)
    extras = {}
    for k, v in ck.extras.items():
        if _is_plain(v):
            extras[k] = v
        else:
            dropped.append(k)
    if dropped:
        notes.append(f'not carried (not plain data): {dropped}')
    return dict(version=CARRY_VERSION, source=ck.generation, meta=meta, extras=extras,
                top_order=list(ck.top_order), state_dict_order=list(ck.state_dict_order),
                ema_keys=dict(ck.ema_keys), ema_in_params=ck.ema_in_params,
                by_epoch=ck.by_epoch, steps=ck.steps, has_optimizer=ck.has_optimizer,
                tracks_buffers=ck.generation == 'mmdet' and not ck.param_keys)


def _restorable(ck: EMACheckpoint, target: str) -> Optional[Dict[str, Any]]:
    """The carried record, when it describes ``target`` and still matches this file."""
    rec = ck.meta.get(COMPAT_KEY)
    if not isinstance(rec, dict) or rec.get('version') != CARRY_VERSION:
        return None
    source = rec.get('source')
    legacy = ('mmcv', 'mmdet')
    if source != target and not (source in legacy and target in legacy):
        return None
    if target == 'mmcv' and rec.get('tracks_buffers'):
        return None  # mmcv EMAHook tracks parameters only: an mmdet skip_buffers=False layout
        # cannot be restored as mmcv
    stamp = rec.get('written_as', {})
    if (stamp.get('epoch') != ck.meta.get('epoch') or stamp.get('iter') != ck.meta.get('iter')
            or stamp.get('model_keys') != list(ck.raw) or stamp.get('steps') != ck.steps):
        ck.notes.append(f'meta.{COMPAT_KEY} does not match this file any more (trained on '
                        'since the conversion?); ignored')
        return None
    return rec


def _stamp(out_meta: Dict[str, Any], rec: Dict[str, Any], model_keys, steps,
           ema_in_params=None, by_epoch=None) -> None:
    """Record what was written, so the record is used only while the file still matches it."""
    rec['written_as'] = dict(epoch=out_meta['epoch'], iter=out_meta['iter'],
                             model_keys=list(model_keys), steps=steps,
                             ema_in_params=ema_in_params, by_epoch=by_epoch)
    out_meta[COMPAT_KEY] = rec


def to_mmengine(ck: EMACheckpoint) -> "OrderedDict[str, Any]":
    """The mmengine 0.10.7 ``Runner.save_checkpoint`` + ``EMAHook`` layout
    (docs/runner-behaviour.md#mmengine-checkpoint, #mmengine-emahook).

    ``state_dict`` = EMA weights (raw for untracked keys, as mmengine's
    ``update_buffers=False`` copies buffers), ``ema_state_dict`` = ``steps`` +
    ``module.<key>`` raw weights, ``steps`` = completed iterations (one update
    call per iteration), meta epoch/iter as mmengine writes them, and a plain
    ``message_hub`` that the real ``Runner.resume`` accepts.
    """
    if ck.generation == 'mmengine':
        raise CheckpointError('already an mmengine checkpoint')
    notes = ck.notes
    rec = _restorable(ck, 'mmengine')
    if rec is not None:
        meta = copy.deepcopy(rec['meta'])
        steps = rec['steps']
    else:
        meta = {'epoch': ck.epochs_done if ck.by_epoch else 0, 'iter': ck.iters_done}
        steps = ck.iters_done
        if ck.ema is not None:
            notes.append(f'steps = {steps}: one mmengine update call per completed legacy '
                         'iteration')
    if ck.ema is None:
        notes.append(NO_EMA_NOTE)
    sd = OrderedDict()
    for k, v in ck.raw.items():
        sd[k] = ck.ema[k] if ck.ema is not None and k in ck.ema else v
    for alias, primary in ck.aliases.items():   # tied weights: one tensor, as mmengine saves it
        sd[alias] = sd[primary]
    out: "OrderedDict[str, Any]" = OrderedDict()
    out['meta'] = meta
    out['state_dict'] = sd
    if rec is not None:
        for k, v in rec['extras'].items():
            out[k] = copy.deepcopy(v)
    if 'message_hub' not in out:
        out['message_hub'] = {'log_scalars': {}, 'runtime_info': {}, 'resumed_keys': {}}
    if ck.has_optimizer:
        out['optimizer'] = ck.optimizer
    if ck.ema is not None:
        esd = OrderedDict()
        esd['steps'] = torch.tensor(steps, dtype=torch.long)
        for k, v in ck.raw.items():
            esd['module.' + k] = v
        for alias, primary in ck.aliases.items():
            esd['module.' + alias] = esd['module.' + primary]
        out['ema_state_dict'] = esd
    if rec is not None:
        order = [k for k in rec['top_order'] if k in out]
        order += [k for k in out if k not in order]
        out = OrderedDict((k, out[k]) for k in order)
    else:
        carried = _carry(ck, notes)
        _stamp(meta, carried, ck.raw, steps if ck.ema is not None else None)
    return out


def _param_keys(ck: EMACheckpoint, explicit: Optional[Sequence[str]]) -> List[str]:
    if explicit is not None:
        missing = [k for k in explicit if k not in ck.raw]
        if missing:
            raise CheckpointError(f'param_keys not in the model: {missing}')
        ck.evidence.append('parameter keys: given')
        return list(explicit)
    if ck.param_keys is not None:
        ck.evidence.append('parameter keys: the tracked set of the legacy source')
        return list(ck.param_keys)
    keys = [k for k in guess_param_keys(ck.raw) if k not in ck.aliases]
    msg = (f'parameter keys GUESSED from names and dtypes (floating point, not {BUFFER_SUFFIXES}): '
           'a float buffer with another name would get an ema_* buffer the hook does not have; '
           'pass --param-keys FILE (the model\'s named_parameters() names)')
    ck.evidence.append(msg)
    ck.warnings.append(msg)
    return keys


def to_legacy(ck: EMACheckpoint, family: str, priority=None, skip_buffers: Optional[bool] = None,
              by_epoch: Optional[bool] = None, param_keys: Optional[Sequence[str]] = None
              ) -> "OrderedDict[str, Any]":
    """The mmcv 1.6 ``save_checkpoint`` layout with mmcv ``EMAHook`` / mmdet 2.x EMA buffers.

    ``family``: 'mmcv' (EMA buffers for parameters) or 'mmdet' (for the whole
    state dict unless ``skip_buffers``). ``priority``: the target hook's
    priority; below 50 the parameters hold the EMA (the epoch-end swap came
    first). Default for an epoch-based target: parameters hold the EMA, the one
    layout that the legacy hooks' ``resume_from`` continues correctly
    (docs/runner-behaviour.md#resume-matrix); an iteration-based target never swaps.
    """
    if family not in ('mmcv', 'mmdet'):
        raise CheckpointError(f'unknown legacy family {family!r}')
    notes = ck.notes
    rec = _restorable(ck, family) if ck.generation == 'mmengine' else None
    if rec is not None and priority is None and skip_buffers is None and by_epoch is None:
        return _restore_legacy(ck, rec)
    by_epoch = ck.by_epoch if by_epoch is None else by_epoch
    if ck.generation == 'mmengine':
        meta = {'epoch': ck.epochs_done if by_epoch else ck.epochs_done + 1,
                'iter': ck.iters_done if by_epoch else ck.iters_done - 1}
    else:
        meta = {k: v for k, v in ck.meta.items() if k != COMPAT_KEY}
        if by_epoch != ck.by_epoch:
            meta['epoch'] = ck.epochs_done if by_epoch else ck.epochs_done + 1
            meta['iter'] = ck.iters_done if by_epoch else ck.iters_done - 1
    if ck.steps is not None and ck.steps != ck.iters_done:
        ck.warnings.append(f'steps {ck.steps} != {ck.iters_done} iterations done (begin_iter/'
                     'begin_epoch, or a load_from restart): legacy hooks count runner.iter '
                     'instead, so momentum schedules see a different step count')
    if ck.ema is None:
        sd = OrderedDict(ck.raw)
        swapped = None
        ema_keys: Dict[str, str] = {}
        notes.append(NO_EMA_NOTE)
    else:
        params = _param_keys(ck, param_keys)
        if family == 'mmcv':
            tracked = [k for k in ck.raw if k in set(params)]
        else:
            if skip_buffers is None:
                if ck.generation == 'mmengine':
                    differ = [k for k in ck.raw if k not in set(params)
                              and not torch.equal(ck.raw[k], ck.ema[k])]
                    skip_buffers = not differ
                    ck.evidence.append(
                        f'skip_buffers={skip_buffers}: buffers '
                        f'{"differ" if differ else "are equal"} between the EMA and raw sides '
                        f'({"update_buffers=True" if differ else "update_buffers=False"})')
                else:
                    skip_buffers = ck.generation == 'mmcv' or bool(ck.param_keys)
            tracked = [k for k in ck.raw if skip_buffers is False or k in set(params)]
            if skip_buffers is False and ck.aliases and by_epoch:
                raise CheckpointError(
                    f'tied weights {sorted(ck.aliases)}: mmdet skip_buffers=False tracks every '
                    'state_dict() name, and its epoch-end swap runs once per name on the one '
                    'tensor, so the resumed run would continue from the EMA weights; convert '
                    'with --skip-buffers yes, or to an iteration-based target')
        if family == 'mmcv' or skip_buffers is not False:   # named_parameters(): ties once
            tracked = [k for k in tracked if k not in ck.aliases]
        if priority is not None:
            swapped = by_epoch and swapped_by_priority(priority)
        elif not by_epoch:
            swapped = False
        elif ck.generation in ('mmcv', 'mmdet') and ck.ema_in_params is not None:
            swapped = ck.ema_in_params
        else:
            swapped = True
            notes.append('target layout: parameters hold the EMA, ema_* the raw weights (as '
                         'saved by a hook at priority < 50): resume it with the EMA hook\'s '
                         'resume_from, which swaps them back '
                        '(docs/runner-behaviour.md#resume-matrix)')
        ema_keys = {}
        for k in tracked:
            ema_keys[k] = ema_name(k)
        clash = [k for k in ema_keys.values() if k in ck.raw]
        if clash:
            raise CheckpointError(f'EMA buffer names {clash} collide with model keys')
        if len(set(ema_keys.values())) != len(ema_keys):
            raise CheckpointError('two tracked keys rename to the same ema_* buffer')
        sd = OrderedDict()
        for k in tracked:
            ev = ck.ema.get(k)
            if ev is None:
                ev = ck.raw[k]
                ck.warnings.append(f'{k}: no EMA value in the source, ema_* set to the raw value '
                                   '(its EMA restarts from the raw weights)')
            sd[ema_keys[k]] = ck.raw[k] if swapped else ev
        for k, v in ck.raw.items():
            if k in ema_keys:
                ev = ck.ema.get(k, v)
                sd[k] = ev if swapped else v
            else:
                sd[k] = v
        lost = [k for k in ck.ema if k not in ema_keys and k not in ck.aliases
                and not torch.equal(ck.ema[k], ck.raw[k])]
        if lost:
            ck.warnings.append(f'EMA values of {lost} dropped: the target hook does not track '
                               'them')
        for alias, primary in ck.aliases.items():   # tied: one tensor under both names
            sd[alias] = sd[primary]
    out: "OrderedDict[str, Any]" = OrderedDict()
    out['meta'] = meta
    out['state_dict'] = sd
    if ck.has_optimizer:
        out['optimizer'] = ck.optimizer
    if ck.generation in ('mmcv', 'mmdet'):
        for k, v in ck.extras.items():
            out[k] = v
        _stamp(meta, dict(version=CARRY_VERSION, source=ck.generation), list(ck.raw), None,
               swapped, by_epoch)
    else:
        carried = _carry(ck, notes)
        dropped = [k for k in ck.extras if k not in carried['extras']]
        if dropped:
            notes.append(f'{dropped} not written: the legacy runner has no use for them')
        _stamp(meta, carried, list(ck.raw), None, swapped, by_epoch)
    return out


def _restore_legacy(ck: EMACheckpoint, rec: Dict[str, Any]) -> "OrderedDict[str, Any]":
    swapped = rec['ema_in_params']
    ema_keys = rec['ema_keys']
    values: Dict[str, torch.Tensor] = {}
    for k, v in ck.raw.items():
        if k in ema_keys:
            e = ck.ema[k]  # type: ignore[index]
            values[k], values[ema_keys[k]] = (e, v) if swapped else (v, e)
        else:
            values[k] = v
    for alias, primary in ck.aliases.items():   # tied weights: one tensor under both names
        values[alias] = values[primary]
    order = rec['state_dict_order']
    if sorted(order) != sorted(values):
        raise CheckpointError(f'meta.{COMPAT_KEY}.state_dict_order does not match the keys')
    sd = OrderedDict((k, values[k]) for k in order)
    parts: Dict[str, Any] = {'meta': copy.deepcopy(rec['meta']), 'state_dict': sd}
    if rec['has_optimizer']:
        parts['optimizer'] = ck.optimizer
    for k, v in rec['extras'].items():
        parts[k] = copy.deepcopy(v)
    ck.evidence.append(f'restored the original {rec["source"]} layout from meta.{COMPAT_KEY}')
    return OrderedDict((k, parts[k]) for k in rec['top_order'] if k in parts)


def atomic_save(obj: Any, dst, sources: Sequence = (), force: bool = False):
    """``torch.save(obj, dst)`` through :func:`compat_ema.core.atomic.write_new`: never over
    one of ``sources``, over an existing ``dst`` only with ``force``, into an existing
    folder only; a failure leaves nothing behind. Raises :class:`CheckpointError`."""
    return write_new(dst, lambda f: torch.save(obj, f), sources, force, error=CheckpointError,
                     make_parents=False)
