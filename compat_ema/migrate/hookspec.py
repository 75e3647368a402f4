"""Recognise EMA hook entries of every generation in config dicts.

:func:`classify` turns one ``custom_hooks`` entry into a :class:`HookSpec`
naming the upstream class it builds (``mmcv.EMAHook``,
``mmdet.ExpMomentumEMAHook``, ``mmdet.LinearMomentumEMAHook``,
``mmengine.EMAHook``), with its arguments checked against that class's
signature: an unknown key is an :class:`UnknownKeysError` naming it (upstream
would raise a ``TypeError`` when the runner builds the hook, far from the
config). ``EMAHook`` exists in mmcv and in mmengine: mmengine-only keys
(``ema_type``, ``begin_iter``...) or the config's generation decide, and
without either the name is ambiguous.

:func:`is_ema_like` flags hook types that look like EMA but are none of the
known ones (``ModelEMAHook``, ``SWAHook``, ...) so that tools report them
instead of dropping them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ['HookSpec', 'UnknownKeysError', 'UnreadableValueError', 'AmbiguousHookError', 'classify',
           'is_ema_like',
           'LEGACY_DEFAULTS', 'MMENGINE_HOOK_DEFAULTS', 'AVERAGED_MODEL_DEFAULTS',
           'config_generation', 'short_type']

#: keyword arguments (with upstream defaults) of each legacy hook class
LEGACY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'mmcv.EMAHook': dict(momentum=0.0002, interval=1, warm_up=100, resume_from=None),
    'mmdet.ExpMomentumEMAHook': dict(momentum=0.0002, interval=1, skip_buffers=False,
                                     resume_from=None, total_iter=2000),
    'mmdet.LinearMomentumEMAHook': dict(momentum=0.0002, interval=1, skip_buffers=False,
                                        resume_from=None, warm_up=100),
    # not registered by mmdet 2.28 itself; configs name it only after registering it themselves
    'mmdet.BaseEMAHook': dict(momentum=0.0002, interval=1, skip_buffers=False, resume_from=None),
}

#: mmengine ``EMAHook``'s own arguments
MMENGINE_HOOK_DEFAULTS: Dict[str, Any] = dict(ema_type='ExponentialMovingAverage',
                                              strict_load=False, begin_iter=0, begin_epoch=0)

#: keyword arguments (with defaults) of each averaged-model type, by short name
AVERAGED_MODEL_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'ExponentialMovingAverage': dict(momentum=0.0002, interval=1, device=None,
                                     update_buffers=False),
    'MomentumAnnealingEMA': dict(momentum=0.0002, gamma=100, interval=1, device=None,
                                 update_buffers=False),
    'StochasticWeightAverage': dict(interval=1, device=None, update_buffers=False),
    # mmdet 3.x / mmyolo
    'ExpMomentumEMA': dict(momentum=0.0002, gamma=2000, interval=1, device=None,
                           update_buffers=False),
    # compat_ema.legacy: the legacy hooks' arguments
    'LegacyMMCVEMA': dict(momentum=0.0002, interval=1, warm_up=100, device=None,
                          update_buffers=None),
    'LegacyMMDetEMA': dict(momentum=0.0002, interval=1, skip_buffers=False, device=None,
                           update_buffers=None),
    'LegacyExpMomentumEMA': dict(momentum=0.0002, interval=1, skip_buffers=False,
                                 total_iter=2000, device=None, update_buffers=None),
    'LegacyLinearMomentumEMA': dict(momentum=0.0002, interval=1, skip_buffers=False,
                                    warm_up=100, device=None, update_buffers=None),
}

_LEGACY_NAMES = {
    'EMAHook': 'mmcv.EMAHook', 'mmcv.EMAHook': 'mmcv.EMAHook', 'mmdet.EMAHook': 'mmcv.EMAHook',
    'ExpMomentumEMAHook': 'mmdet.ExpMomentumEMAHook',
    'mmdet.ExpMomentumEMAHook': 'mmdet.ExpMomentumEMAHook',
    'LinearMomentumEMAHook': 'mmdet.LinearMomentumEMAHook',
    'mmdet.LinearMomentumEMAHook': 'mmdet.LinearMomentumEMAHook',
    'BaseEMAHook': 'mmdet.BaseEMAHook', 'mmdet.BaseEMAHook': 'mmdet.BaseEMAHook',
}
_MMENGINE_NAMES = {'mmengine.EMAHook', 'EMAHook', 'LegacyEMAHook', 'legacy.LegacyEMAHook',
                   'mmdet3.EMAHook', 'mmyolo.EMAHook', 'mmdet.EMAHook'}
_MMENGINE_ONLY_KEYS = {'ema_type', 'strict_load', 'begin_iter', 'begin_epoch', 'update_buffers',
                       'gamma', 'device'}
_LEGACY_ONLY_KEYS = {'warm_up', 'resume_from', 'skip_buffers', 'total_iter'}


class UnknownKeysError(ValueError):
    """An EMA hook entry with keys its class does not take."""


class UnreadableValueError(UnknownKeysError):
    """An EMA hook entry with a value the config reader cannot compute without executing code."""


class AmbiguousHookError(ValueError):
    """``EMAHook`` whose generation (mmcv or mmengine) cannot be told from the entry."""


@dataclass
class HookSpec:
    """One recognised EMA hook entry.

    Attributes:
        kind: ``'mmcv.EMAHook'``, ``'mmdet.ExpMomentumEMAHook'``,
            ``'mmdet.LinearMomentumEMAHook'`` or ``'mmengine.EMAHook'``.
        args: the entry's arguments as written (no ``type``/``priority``).
        priority: the ``priority`` key, or None when absent.
        raw: the entry itself.
        ema_type: for ``mmengine.EMAHook``, the averaged model's short name.
    """

    kind: str
    args: Dict[str, Any]
    priority: Any = None
    raw: Dict[str, Any] = field(default_factory=dict)
    ema_type: Optional[str] = None
    hook_class: str = 'EMAHook'

    @property
    def generation(self) -> str:
        return self.kind.split('.')[0]

    @property
    def is_legacy(self) -> bool:
        return self.kind in LEGACY_DEFAULTS

    def resolved(self) -> Dict[str, Any]:
        """The arguments with the upstream defaults filled in."""
        if self.is_legacy:
            out = dict(LEGACY_DEFAULTS[self.kind])
        else:
            out = dict(MMENGINE_HOOK_DEFAULTS)
            out.update(AVERAGED_MODEL_DEFAULTS[self.ema_type or 'ExponentialMovingAverage'])
        out.update(self.args)
        if not self.is_legacy:
            out['ema_type'] = self.ema_type
            if self.hook_class == 'LegacyEMAHook':
                out['begin_iter'] = out['begin_epoch'] = 0
        return out

    def describe(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.args.items())
        pr = '' if self.priority is None else f', priority={self.priority!r}'
        extra = f' [{self.ema_type}]' if self.ema_type else ''
        return f'{self.kind}({args}{pr}){extra}'


def short_type(name: str) -> str:
    """``'mmdet.ExpMomentumEMA'`` -> ``'ExpMomentumEMA'``; compat_ema's integration names
    (``CompatEMAHook``, ``CompatExpMomentumEMAHook``, ``CompatMMDet3ExpMomentumEMA``, ...,
    see :mod:`compat_ema.integrations`) -> the upstream name they reproduce."""
    short = name.rsplit('.', 1)[-1]
    for prefix in ('CompatMMDet3', 'CompatMMYOLO', 'Compat'):
        if short.startswith(prefix) and len(short) > len(prefix) and short[len(prefix)].isupper():
            return short[len(prefix):]
    return short


_WORD = re.compile(r'[A-Z]+(?=[A-Z][a-z]|\b|_|\d)|[A-Z]?[a-z]+|[A-Z]+|\d+')


def is_ema_like(type_name: Any) -> bool:
    """Whether a hook type name looks like an EMA/weight-averaging hook."""
    if not isinstance(type_name, str):
        return False
    words = {w.lower() for w in _WORD.findall(short_type(type_name))}
    return bool(words & {'ema', 'swa', 'average', 'averaging', 'averaged', 'polyak', 'teacher'})


def config_generation(cfg: Dict[str, Any]) -> Optional[str]:
    """'mmengine' or 'mmcv' from a config's top-level keys, or None when it cannot tell."""
    modern = {'default_scope', 'train_cfg', 'optim_wrapper', 'train_dataloader',
              'param_scheduler', 'default_hooks'}
    legacy = {'runner', 'optimizer_config', 'lr_config', 'checkpoint_config', 'log_config',
              'workflow', 'data', 'evaluation', 'resume_from'}
    m, l_ = len(modern & set(cfg)), len(legacy & set(cfg))
    if m > l_:
        return 'mmengine'
    if l_ > m:
        return 'mmcv'
    return None


def classify(entry: Any, generation: Optional[str] = None) -> Optional[HookSpec]:
    """Recognise ``entry`` (a hook config dict) or return None when it is not a known EMA hook.

    Args:
        entry: a ``custom_hooks`` item.
        generation: 'mmcv' or 'mmengine' when known from the config, to read a
            bare ``EMAHook`` with no generation-specific key.

    Raises:
        UnknownKeysError: a known EMA hook with keys its class does not take.
        AmbiguousHookError: ``EMAHook`` that could be either generation.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get('type'), str):
        return None
    type_name = entry['type']
    unreadable = {k: v for k, v in entry.items() if type(v).__name__ == 'Unevaluated'}
    if unreadable and (is_ema_like(type_name) or 'ema_type' in entry):
        raise UnreadableValueError(
            f'{type_name}: cannot read ' + '; '.join(f'{k} ({v.describe()})'
                                                     for k, v in unreadable.items())
            + ' (configs are read, never executed: write the value as a literal or a name)')
    if short_type(type_name) != type_name.rsplit('.', 1)[-1]:  # a compat integration name
        type_name = short_type(type_name)
    args = {k: v for k, v in entry.items() if k not in ('type', 'priority')}
    keys = set(args)
    kind: Optional[str] = None
    if short_type(type_name) == 'EMAHook' and type_name in _MMENGINE_NAMES | set(_LEGACY_NAMES):
        scope = type_name.split('.')[0] if '.' in type_name else None
        if scope == 'mmcv':
            kind = 'mmcv.EMAHook'
        elif scope in ('mmengine', 'mmdet3', 'mmyolo'):
            kind = 'mmengine.EMAHook'
        elif 'ema_type' in keys or (keys & _MMENGINE_ONLY_KEYS and not keys & _LEGACY_ONLY_KEYS):
            kind = 'mmengine.EMAHook'
        elif keys & _LEGACY_ONLY_KEYS and not keys & _MMENGINE_ONLY_KEYS:
            kind = 'mmcv.EMAHook'
        elif keys & _LEGACY_ONLY_KEYS and keys & _MMENGINE_ONLY_KEYS:
            raise UnknownKeysError(
                f'{type_name}: mixes mmcv-only keys {sorted(keys & _LEGACY_ONLY_KEYS)} with '
                f'mmengine-only keys {sorted(keys & _MMENGINE_ONLY_KEYS)}; no EMAHook takes both')
        elif generation in ('mmcv', 'mmengine'):
            kind = 'mmcv.EMAHook' if generation == 'mmcv' else 'mmengine.EMAHook'
        else:
            raise AmbiguousHookError(
                f'{type_name}({", ".join(sorted(keys))}): both mmcv 1.x and mmengine have an '
                'EMAHook with these arguments; write it scoped (mmcv.EMAHook / mmengine.EMAHook) '
                'or pass the generation (--generation mmcv|mmengine)')
    elif type_name in _LEGACY_NAMES:
        kind = _LEGACY_NAMES[type_name]
    elif short_type(type_name) == 'LegacyEMAHook':
        kind = 'mmengine.EMAHook'
    if kind is None:
        return None
    if kind in LEGACY_DEFAULTS:
        unknown = keys - set(LEGACY_DEFAULTS[kind])
        if unknown:
            raise UnknownKeysError(
                f'{type_name}: unknown key(s) {sorted(unknown)}; {kind} takes '
                f'{sorted(LEGACY_DEFAULTS[kind])} (plus type, priority)')
        return HookSpec(kind=kind, args=args, priority=entry.get('priority'), raw=entry)
    default_type = ('LegacyMMCVEMA' if short_type(type_name) == 'LegacyEMAHook'
                    else 'ExponentialMovingAverage')
    ema_type = args.get('ema_type', default_type)
    if not isinstance(ema_type, str):
        raise UnknownKeysError(f'{type_name}: ema_type must be a registered name, got {ema_type!r}')
    short = short_type(ema_type)
    if short not in AVERAGED_MODEL_DEFAULTS:
        raise UnknownKeysError(
            f'{type_name}: ema_type {ema_type!r} is not an averaged model this tool knows '
            f'({", ".join(sorted(AVERAGED_MODEL_DEFAULTS))})')
    allowed = set(MMENGINE_HOOK_DEFAULTS) | set(AVERAGED_MODEL_DEFAULTS[short])
    unknown = keys - allowed
    if unknown:
        raise UnknownKeysError(
            f'{type_name}(ema_type={ema_type!r}): unknown key(s) {sorted(unknown)}; it takes '
            f'{sorted(allowed)} (plus type, priority)')
    return HookSpec(kind='mmengine.EMAHook', args=args, priority=entry.get('priority'),
                    raw=entry, ema_type=short, hook_class=short_type(type_name))
