"""Read the three OpenMMLab EMA checkpoint layouts into one neutral form.

Layouts (docs/runner-behaviour.md#mmcv-checkpoint, docs/runner-behaviour.md#mmcv-emahook, docs/runner-behaviour.md#mmdet-checkpoint, docs/runner-behaviour.md#mmengine-checkpoint, docs/runner-behaviour.md#mmengine-emahook):

* mmcv 1.x ``EMAHook`` / mmdet 2.x ``BaseEMAHook``: ``{'meta', 'state_dict',
  'optimizer'}``; ``state_dict`` holds the model keys plus one ``ema_*`` buffer
  per tracked tensor (mmcv: parameters; mmdet: the whole ``state_dict()`` unless
  ``skip_buffers=True``). Which side holds the EMA depends on the hook's
  priority relative to ``CheckpointHook`` (50): at NORMAL the epoch-end swap has
  not happened yet (parameters raw, ``ema_*`` EMA); below 50 (e.g. 49, YOLOX)
  it has (parameters EMA, ``ema_*`` raw). Under ``IterBasedRunner`` nothing is
  ever swapped. meta: epoch = epochs done, iter = iterations done (epoch
  runner); iter = iterations done - 1 (iter runner).
* mmengine 0.x ``EMAHook``: ``state_dict`` holds the EMA weights,
  ``ema_state_dict`` holds ``steps`` plus ``module.<key>`` raw weights; meta
  epoch/iter = epochs/iterations done (iter loop: epoch 0).

:func:`parse` returns an :class:`EMACheckpoint`: raw weights, EMA weights and
counters, with the evidence for every decision it had to make.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .errors import CheckpointError
from .aliases import alias_groups
from .keys import match_ema_keys

__all__ = ['EMACheckpoint', 'parse', 'COMPAT_KEY', 'BUFFER_SUFFIXES', 'swapped_by_priority']

#: meta key where compat_ema carries what a target generation cannot hold
COMPAT_KEY = 'compat_ema'
#: state-dict names that are buffers, not parameters, in torch's own modules
BUFFER_SUFFIXES = ('running_mean', 'running_var', 'num_batches_tracked')


def swapped_by_priority(priority) -> bool:
    """True when an mmcv/mmdet EMA hook at ``priority`` swaps before ``CheckpointHook`` saves.

    ``CheckpointHook`` is registered at NORMAL (50) before custom hooks, so a
    custom hook runs before it only with a priority number below 50.
    """
    from ..core.priority import get_priority
    try:
        value = get_priority(priority if not (isinstance(priority, str) and priority.isdigit())
                             else int(priority))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f'invalid hook priority {priority!r}: {exc}') from None
    return value < 50


@dataclass
class EMACheckpoint:
    """A checkpoint of any generation, as raw weights + EMA weights + counters."""

    generation: str                       # 'mmcv' | 'mmdet' | 'mmengine'
    raw: "OrderedDict[str, torch.Tensor]"   # model state dict with raw weights, model order
    ema: Optional["OrderedDict[str, torch.Tensor]"]  # EMA per tracked key (None: no EMA)
    meta: Dict[str, Any]
    by_epoch: bool
    iters_done: int                       # completed training iterations
    epochs_done: int
    steps: Optional[int] = None           # mmengine ExponentialMovingAverage.steps
    optimizer: Any = None
    has_optimizer: bool = False
    extras: Dict[str, Any] = field(default_factory=dict)   # other top-level entries
    top_order: List[str] = field(default_factory=list)
    state_dict_order: List[str] = field(default_factory=list)
    ema_keys: Dict[str, str] = field(default_factory=dict)  # legacy: model key -> ema_* key
    ema_in_params: Optional[bool] = None   # legacy: parameters hold the EMA (swap happened)
    param_keys: Optional[List[str]] = None
    evidence: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: what makes a conversion of this file inexact (``--strict`` refuses them)
    warnings: List[str] = field(default_factory=list)
    #: tied weights: alias key -> the key the hooks track (see :mod:`.aliases`)
    aliases: Dict[str, str] = field(default_factory=dict)
    #: set when nothing decides which side holds the EMA (only with ``unknown_side_ok``)
    side_unknown: Optional[str] = None
    #: a bare state dict (no meta epoch/iter): weights, not a runner checkpoint
    bare: bool = False

    @property
    def model_keys(self) -> List[str]:
        """The model's ``state_dict()`` keys (no ``ema_*`` buffers), in the file's order."""
        return list(self.raw)


def _is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def _tensor_dict(d: Any, where: str) -> "OrderedDict[str, torch.Tensor]":
    if not isinstance(d, dict):
        raise CheckpointError(f'{where} is a {type(d).__name__}, expected a dict of tensors')
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in d.items():
        if not isinstance(k, str):
            raise CheckpointError(f'{where} has a non-string key {k!r}')
        if not _is_tensor(v):
            raise CheckpointError(f'{where}[{k!r}] is a {type(v).__name__}, expected a tensor')
        out[k] = v
    return out


def _check_pair(a: torch.Tensor, b: torch.Tensor, ka: str, kb: str) -> None:
    if a.shape != b.shape:
        raise CheckpointError(f'shape mismatch: {ka} has shape {tuple(a.shape)} but {kb} has '
                              f'{tuple(b.shape)}')
    if a.dtype != b.dtype:
        raise CheckpointError(f'dtype mismatch: {ka} is {a.dtype} but {kb} is {b.dtype}')


def _meta(ckpt: dict) -> Dict[str, Any]:
    meta = ckpt.get('meta', {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"'meta' is a {type(meta).__name__}, expected a dict")
    for k in ('epoch', 'iter'):
        if k in meta and not (isinstance(meta[k], int) and not isinstance(meta[k], bool)):
            raise CheckpointError(f"meta[{k!r}] is {meta[k]!r}, expected an int")
    return meta


def guess_param_keys(sd: Dict[str, torch.Tensor]) -> List[str]:
    """Keys that look like parameters: floating point and not a BatchNorm statistic."""
    return [k for k, v in sd.items()
            if v.is_floating_point() and k.rsplit('.', 1)[-1] not in BUFFER_SUFFIXES]


def detect_generation(ckpt: dict) -> Tuple[str, List[str]]:
    """Which layout wrote ``ckpt``: ``('mmengine'|'legacy', evidence)``."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'the file holds a {type(ckpt).__name__}, not a checkpoint dict')
    if 'state_dict' not in ckpt:
        if ckpt and all(isinstance(k, str) and _is_tensor(v) for k, v in ckpt.items()):
            return 'legacy', ['a bare state dict (a flat {key: tensor} dict)']
        keys = list(ckpt)[:8]
        raise CheckpointError(f"no 'state_dict' entry and not a flat dict of tensors (top-level "
                              f'keys: {keys}): not a checkpoint this tool knows')
    meta: Dict[str, Any] = ckpt['meta'] if isinstance(ckpt.get('meta'), dict) else {}
    ev = []
    if 'ema_state_dict' in ckpt:
        ev.append("has 'ema_state_dict' (mmengine EMAHook.before_save_checkpoint)")
    if 'message_hub' in ckpt:
        ev.append("has 'message_hub' (mmengine Runner.save_checkpoint)")
    if 'mmengine_version' in meta:
        ev.append(f"meta.mmengine_version = {meta['mmengine_version']!r}")
    if ev:
        return 'mmengine', ev
    if 'mmcv_version' in meta:
        ev.append(f"meta.mmcv_version = {meta['mmcv_version']!r} (mmcv save_checkpoint)")
    sd = ckpt['state_dict']
    if isinstance(sd, dict) and any(isinstance(k, str) and k.startswith('ema_') for k in sd):
        ev.append('ema_* keys inside state_dict (mmcv EMAHook / mmdet BaseEMAHook buffers)')
    if not ev:
        ev.append('no mmengine entries; read as an mmcv-style checkpoint')
    return 'legacy', ev


def _config_text(meta: dict) -> str:
    for key in ('config', 'cfg'):
        if isinstance(meta.get(key), str):
            return meta[key]
    return ''


def _written_as(meta: dict) -> dict:
    """The layout compat_ema recorded when it wrote this file (empty if none)."""
    rec = meta.get(COMPAT_KEY)
    stamp = rec.get('written_as') if isinstance(rec, dict) else None
    if not isinstance(stamp, dict):
        return {}
    if stamp.get('epoch') != meta.get('epoch') or stamp.get('iter') != meta.get('iter'):
        return {}
    return stamp


def _legacy_by_epoch(meta: dict, explicit: Optional[bool], ev: List[str],
                     filename: Optional[str] = None, warnings: Optional[List[str]] = None,
                     bare: bool = False) -> Optional[bool]:
    if explicit is not None:
        ev.append(f'runner: {"epoch" if explicit else "iter"}-based (given)')
        return explicit
    if _written_as(meta).get('by_epoch') is not None:
        val = _written_as(meta)['by_epoch']
        ev.append(f'runner: {"epoch" if val else "iter"}-based (meta.{COMPAT_KEY}: written so)')
        return val
    last = (meta.get('hook_msgs') or {}).get('last_ckpt') if isinstance(meta.get('hook_msgs'),
                                                                         dict) else None
    if isinstance(last, str):
        name = last.replace('\\', '/').rsplit('/', 1)[-1]
        if name.startswith('iter_'):
            ev.append(f'runner: IterBasedRunner (meta.hook_msgs.last_ckpt = {name!r})')
            return False
        if name.startswith('epoch_'):
            ev.append(f'runner: EpochBasedRunner (meta.hook_msgs.last_ckpt = {name!r})')
            return True
    m = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', filename or '')
    if m and m.group(1) == 'iter' and int(m.group(2)) == meta.get('iter', -2) + 1:
        ev.append(f'runner: IterBasedRunner (file name {filename!r} with meta iter '
                  f'{meta["iter"]} = N - 1, mmcv CheckpointHook by_epoch=False)')
        return False
    if m and m.group(1) == 'epoch' and int(m.group(2)) == meta.get('epoch'):
        ev.append(f'runner: EpochBasedRunner (file name {filename!r} with meta epoch '
                  f'{meta["epoch"]})')
        return True
    cfg = _config_text(meta)
    if 'IterBasedRunner' in cfg:
        ev.append("runner: IterBasedRunner (named in meta.config)")
        return False
    if 'EpochBasedRunner' in cfg:
        ev.append("runner: EpochBasedRunner (named in meta.config)")
        return True
    if bare:
        ev.append('runner: unknown (a state dict holds no runner state)')
        return None
    msg = ('runner kind ASSUMED EpochBasedRunner (no evidence in the file): if it was '
           'IterBasedRunner, the counters and the EMA side are wrong; pass --iter-based or '
           '--epoch-based')
    ev.append('runner: ' + msg)
    if warnings is not None:
        warnings.append(msg)
    return True


NOT_A_RUNNER_CHECKPOINT = ('a state dict, not a runner checkpoint (no meta epoch/iter): no runner '
                           'can resume it, so there is nothing to convert; export-ema reads it, '
                           'and load_from / load_checkpoint load it as weights')


def _tie(sd, model, pairs, swapped, raw, ema, ev) -> Dict[str, str]:
    """Tied weights (one storage under several model keys): every name gets the tracked key's
    raw and EMA values. Returns alias -> tracked key."""
    aliases: Dict[str, str] = {}
    for group in alias_groups(OrderedDict((k, sd[k]) for k in model)):
        tracked = [k for k in group if k in pairs]
        if not tracked:
            continue
        primary = tracked[0]
        if len(tracked) > 1:   # mmdet skip_buffers=False: one ema_* buffer per name
            bad = [k for k in tracked[1:] if not (torch.equal(raw[k], raw[primary])
                                                  and torch.equal(ema[k], ema[primary]))]
            if bad:
                raise CheckpointError(
                    f'tied weights {group}: their ema_* buffers disagree ({pairs[primary]} vs '
                    f'{pairs[bad[0]]}): mmdet skip_buffers=False swaps a tied tensor once per '
                    'name, so after an epoch-end swap one buffer holds the raw weights and the '
                    'other the EMA; no layout can be resumed exactly from this file')
        for k in group:
            if k != primary:
                raw[k], ema[k] = raw[primary], ema[primary]
                aliases[k] = primary
        ev.append(f'tied weights: {group} are one tensor in the file; the hook tracked it as '
                  f'{primary!r} ({pairs[primary]}), the EMA applies to every name')
    return aliases


def _parse_legacy(ckpt, meta, model_keys, priority, by_epoch, ev, filename,
                  need_counters=True, unknown_side_ok=False) -> EMACheckpoint:
    from .side import UNKNOWN_SIDE_HELP, decide_side
    bare = 'state_dict' not in ckpt or 'epoch' not in meta or 'iter' not in meta
    if bare and need_counters:
        raise CheckpointError(NOT_A_RUNNER_CHECKPOINT)
    sd = _tensor_dict(ckpt['state_dict'] if 'state_dict' in ckpt else ckpt, 'state_dict')
    model, pairs = match_ema_keys(list(sd), model_keys)
    for m, e in pairs.items():
        _check_pair(sd[m], sd[e], m, e)
    warnings: List[str] = []
    by_epoch = _legacy_by_epoch(meta, by_epoch, ev, filename, warnings, bare)
    swapped = None
    side_unknown = None
    if pairs:
        swapped = decide_side(sd, pairs, meta, by_epoch, priority, _config_text(meta),
                              _written_as(meta), ev)
        if swapped is None:
            side_unknown = ('cannot tell which side of this mmcv-layout checkpoint holds the '
                            'EMA; ' + UNKNOWN_SIDE_HELP)
            if not unknown_side_ok:
                raise CheckpointError(side_unknown)
            ev.append('EMA side: UNKNOWN (nothing in the file decides it)')
    raw: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    ema: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k in model:
        if k in pairs:
            a, b = sd[k], sd[pairs[k]]
            raw[k], ema[k] = (b, a) if swapped else (a, b)
        else:
            raw[k] = sd[k]
    aliases = _tie(sd, model, pairs, swapped, raw, ema, ev) if pairs else {}
    tracked_buffers = [k for k in pairs if k.rsplit('.', 1)[-1] in BUFFER_SUFFIXES
                       or not sd[k].is_floating_point()]
    gen = 'mmdet' if tracked_buffers else 'mmcv'
    if tracked_buffers:
        ev.append(f'mmdet BaseEMAHook with skip_buffers=False (buffers tracked: {tracked_buffers})')
    elif 'mmdet_version' in meta or re.search(r'(Exp|Linear)MomentumEMAHook', _config_text(meta)):
        gen = 'mmdet'
        ev.append('mmdet (meta names mmdet / an mmdet EMA hook); parameters only: '
                  'skip_buffers=True')
    elif pairs:
        ev.append('parameters only: mmcv EMAHook (or mmdet with skip_buffers=True)')
    notes = []
    if pairs and by_epoch is False and (priority is None or not swapped_by_priority(priority)):
        notes.append('IterBasedRunner: an EMA hook at priority >= 50 (NORMAL) updates after '
                     'CheckpointHook has saved, so the EMA here may be one update behind the raw '
                     'weights (the saving iteration\'s update is missing; nothing can recreate '
                     'it). Pass priority 49 if the hook ran before CheckpointHook')
    if bare:
        iters = epochs = 0
    else:
        iters = meta['iter'] if by_epoch else meta['iter'] + 1
        epochs = meta['epoch'] if by_epoch else 0
    params = None
    if pairs and not tracked_buffers:
        params = list(pairs)
    extras = {k: v for k, v in ckpt.items() if k not in ('meta', 'state_dict', 'optimizer')} \
        if 'state_dict' in ckpt else {}
    return EMACheckpoint(
        generation=gen, raw=raw, ema=ema if pairs else None, meta=meta,
        by_epoch=bool(by_epoch), iters_done=iters, epochs_done=epochs,
        optimizer=ckpt.get('optimizer') if 'state_dict' in ckpt else None,
        has_optimizer='optimizer' in ckpt and 'state_dict' in ckpt, extras=extras,
        top_order=list(ckpt) if 'state_dict' in ckpt else ['state_dict'],
        state_dict_order=list(sd), ema_keys=dict(pairs), ema_in_params=swapped,
        param_keys=params, evidence=ev, notes=notes, warnings=warnings, aliases=aliases,
        side_unknown=side_unknown, bare=bare)


def _parse_mmengine(ckpt, meta, ev) -> EMACheckpoint:
    sd = _tensor_dict(ckpt['state_dict'], 'state_dict')
    if 'epoch' not in meta or 'iter' not in meta:
        raise CheckpointError("meta lacks 'epoch'/'iter' (mmengine save_checkpoint writes both): "
                              + NOT_A_RUNNER_CHECKPOINT)
    cfg = _config_text(meta)
    if meta['epoch'] == 0 and meta['iter'] > 0:
        by_epoch = False
        ev.append('loop: IterBasedTrainLoop (meta epoch 0 with iter > 0)')
    elif 'IterBasedTrainLoop' in cfg or re.search(r'by_epoch\s*=\s*False', cfg):
        by_epoch = False
        ev.append('loop: iteration-based (meta.cfg)')
    else:
        by_epoch = True
        ev.append('loop: EpochBasedTrainLoop (meta epoch > 0)')
    ema = raw = None
    steps = None
    if 'ema_state_dict' in ckpt:
        esd = ckpt['ema_state_dict']
        if not isinstance(esd, dict):
            raise CheckpointError(f"'ema_state_dict' is a {type(esd).__name__}, expected a dict")
        if 'steps' not in esd:
            raise CheckpointError("ema_state_dict has no 'steps' entry (mmengine "
                                  'ExponentialMovingAverage always saves it)')
        st = esd['steps']
        if not _is_tensor(st) or st.numel() != 1 or st.is_floating_point():
            raise CheckpointError(f"ema_state_dict['steps'] is {st!r}, expected an integer tensor")
        steps = int(st)
        unexpected = [k for k in esd if k != 'steps' and not k.startswith('module.')]
        if unexpected:
            raise CheckpointError(f"unexpected keys in ema_state_dict: {unexpected} (expected "
                                  "'steps' and 'module.<model key>')")
        esd_t = _tensor_dict({k: v for k, v in esd.items() if k != 'steps'}, 'ema_state_dict')
        names = [k[len('module.'):] for k in esd_t]
        missing = [k for k in sd if 'module.' + k not in esd_t]
        extra = [k for k in names if k not in sd]
        if missing or extra:
            raise CheckpointError(f'state_dict and ema_state_dict disagree: missing in '
                                  f'ema_state_dict {missing}, not in state_dict {extra}')
        raw = OrderedDict()
        for k in sd:
            _check_pair(sd[k], esd_t['module.' + k], f'state_dict[{k!r}]',
                        f"ema_state_dict['module.{k}']")
            raw[k] = esd_t['module.' + k]
        ema = OrderedDict(sd)
        ev.append(f'EMA side: state_dict (EMA) / ema_state_dict (raw), steps = {steps} '
                  '(mmengine EMAHook.before_save_checkpoint swap, '
                  'docs/runner-behaviour.md#mmengine-emahook)')
    else:
        raw = OrderedDict(sd)
        ev.append('no ema_state_dict: no EMA state (trained without EMAHook, or the weights '
                  'loaded with load_from); state_dict holds the model weights')
    aliases: Dict[str, str] = {}
    for group in alias_groups(sd):   # tied weights: mmengine's deep-copied EMA model keeps ties
        primary = group[0]
        bad = [k for k in group[1:] if not torch.equal(raw[k], raw[primary])]
        if bad:
            raise CheckpointError(f'tied weights {group} share one tensor in state_dict but '
                                  f'differ in ema_state_dict ({bad[0]!r}): not a file mmengine '
                                  'wrote')
        aliases.update((k, primary) for k in group[1:])
        ev.append(f'tied weights: {group} are one tensor in the file (tracked as {primary!r})')
    extras = {k: v for k, v in ckpt.items()
              if k not in ('meta', 'state_dict', 'optimizer', 'ema_state_dict')}
    return EMACheckpoint(
        generation='mmengine', raw=raw, ema=ema, meta=meta, by_epoch=by_epoch,
        iters_done=meta['iter'], epochs_done=meta['epoch'], steps=steps,
        optimizer=ckpt.get('optimizer'), has_optimizer='optimizer' in ckpt, extras=extras,
        top_order=list(ckpt), state_dict_order=list(sd), evidence=ev, aliases=aliases)


def parse(ckpt: Any, model_keys: Optional[Sequence[str]] = None, priority=None,
          by_epoch: Optional[bool] = None, filename: Optional[str] = None,
          need_counters: bool = True, unknown_side_ok: bool = False) -> EMACheckpoint:
    """Read a loaded checkpoint dict of any generation into an :class:`EMACheckpoint`.

    ``model_keys``: the model's ``state_dict()`` keys (legacy files; otherwise
    found by elimination). ``priority``: the legacy EMA hook's priority, when
    the file cannot tell which side holds the EMA. ``by_epoch``: the legacy
    runner kind, when the file cannot tell. ``filename``: the file's base name
    (mmcv's ``iter_N.pth`` / ``epoch_N.pth`` is evidence of the runner kind when
    it agrees with meta).

    ``need_counters=False`` accepts a bare state dict (weights with no meta
    epoch/iter; what ``export-ema`` reads); otherwise it is refused as "a
    state dict, not a runner checkpoint". A legacy file whose EMA side nothing
    decides (:mod:`.side`) is refused naming ``--source-priority``, unless
    ``unknown_side_ok`` (``inspect``), which marks it in ``side_unknown``.
    """
    gen, ev = detect_generation(ckpt)
    meta = _meta(ckpt) if 'state_dict' in ckpt else {}
    if gen == 'mmengine':
        return _parse_mmengine(ckpt, meta, ev)
    return _parse_legacy(ckpt, meta, model_keys, priority, by_epoch, ev, filename,
                         need_counters, unknown_side_ok)
