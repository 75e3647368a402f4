"""The GAN/restoration family in the migration tools: mmedit 0.x -> mmagic 1.x EMA hooks.

mmedit 0.16's ``ExponentialMovingAverageHook`` and mmagic 1.2's share a name
and their arguments (``module_keys``, ``interp_mode``, ``interp_cfg``,
``interval``, ``start_iter``), but mmagic flipped ``interp_cfg['momentum']``
(mmedit: weight of the old EMA, default 0.999; mmagic: weight of the new
weights, default 0.001) and ``momentum_nontrainable`` (mmedit 0.0: copy;
mmagic 1.0: copy). This module:

* :func:`classify_gan` recognises the entries (:class:`GanSpec`), checking
  their keys; a bare ``ExponentialMovingAverageHook`` is mmedit's in an mmcv
  1.x config and mmagic's in an mmengine one;
* :func:`map_gan_exact`: ``LegacyExponentialMovingAverageHook`` (compat_ema's
  mmengine hook with mmedit's numbers, bit for bit), arguments unchanged;
* :func:`map_gan_native`: mmagic's own hook with ``momentum = 1 - m`` and
  ``momentum_nontrainable = 1 - m_nt``; the same EMA in exact arithmetic,
  not in floating point (:func:`divergence` measures it);
* :func:`gan_schedule` / :func:`gan_notes`: what ``compat-ema schedule`` shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from .hookspec import AmbiguousHookError, HookSpec, UnknownKeysError
from .mapping import MappedEntry
from .schedule import Step

__all__ = ['GanSpec', 'classify_gan', 'map_gan_exact', 'map_gan_native', 'gan_schedule',
           'gan_notes', 'divergence', 'GAN_DEFAULTS', 'flip']

MMEDIT = 'mmedit.ExponentialMovingAverageHook'
MMAGIC = 'mmagic.ExponentialMovingAverageHook'
LEGACY = 'legacy.LegacyExponentialMovingAverageHook'

#: the hook arguments and interp_cfg defaults of each kind
GAN_DEFAULTS: Dict[str, Dict[str, Any]] = {
    MMEDIT: dict(interp_mode='lerp', interval=-1, start_iter=0, momentum=0.999,
                 momentum_nontrainable=0.0),
    LEGACY: dict(interp_mode='lerp', interval=-1, start_iter=0, momentum=0.999,
                 momentum_nontrainable=0.0),
    MMAGIC: dict(interp_mode='lerp', interval=-1, start_iter=0, momentum=0.001,
                 momentum_nontrainable=1.0),
}
_KEYS = {'module_keys', 'interp_mode', 'interp_cfg', 'interval', 'start_iter'}
_CFG_KEYS = {'momentum', 'momentum_nontrainable'}
_NAMES = {
    'mmedit.ExponentialMovingAverageHook': MMEDIT, 'CompatExponentialMovingAverageHook': MMEDIT,
    'mmagic.ExponentialMovingAverageHook': MMAGIC,
    'CompatMMagicExponentialMovingAverageHook': MMAGIC,
    'LegacyExponentialMovingAverageHook': LEGACY, 'legacy.LegacyExponentialMovingAverageHook': LEGACY,
}


@dataclass
class GanSpec(HookSpec):
    """A recognised mmedit/mmagic ``ExponentialMovingAverageHook`` entry (``kind``: one of
    ``mmedit.``, ``mmagic.ExponentialMovingAverageHook``, ``legacy.LegacyExponentialMovingAverageHook``)."""

    @property
    def is_legacy(self) -> bool:
        return self.kind == MMEDIT

    @property
    def flipped(self) -> bool:
        """True for mmagic's sense of ``momentum`` (the weight of the new weights)."""
        return self.kind == MMAGIC

    def resolved(self) -> Dict[str, Any]:
        out = dict(GAN_DEFAULTS[self.kind])
        out.update({k: v for k, v in self.args.items() if k != 'interp_cfg'})
        out.update(self.args.get('interp_cfg') or {})
        return out


def classify_gan(entry: Any, generation: Optional[str] = None) -> Optional[GanSpec]:
    """A :class:`GanSpec` for an ``ExponentialMovingAverageHook`` entry, else None.

    Raises:
        UnknownKeysError: keys (or ``interp_cfg`` keys) the hooks do not take.
        AmbiguousHookError: a bare name whose generation is unknown.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get('type'), str):
        return None
    name = entry['type']
    if name in _NAMES:
        kind = _NAMES[name]
    elif name == 'ExponentialMovingAverageHook':
        if generation not in ('mmcv', 'mmengine'):
            raise AmbiguousHookError(
                'ExponentialMovingAverageHook: mmedit 0.x (mmcv) and mmagic 1.x (mmengine) both '
                'have it, with opposite momentum; write mmedit.ExponentialMovingAverageHook / '
                'mmagic.ExponentialMovingAverageHook or pass --generation mmcv|mmengine')
        kind = MMEDIT if generation == 'mmcv' else MMAGIC
    else:
        return None
    args = {k: v for k, v in entry.items() if k not in ('type', 'priority')}
    unreadable = [k for k, v in args.items() if type(v).__name__ == 'Unevaluated']
    if unreadable:
        raise UnknownKeysError(f'{name}: cannot read {unreadable} (configs are read, never '
                               'executed: write the values as literals)')
    unknown = set(args) - _KEYS
    if unknown:
        hint = (' (mmgen 0.7\'s momentum_policy/momentum_cfg: mmagic\'s hook has no momentum '
                'policy; BaseGAN ema_config=dict(type=\'RampUpEMA\') is the nearest)'
                if unknown & {'momentum_policy', 'momentum_cfg'} else '')
        raise UnknownKeysError(f'{name}: unknown key(s) {sorted(unknown)}; it takes '
                               f'{sorted(_KEYS)} (plus type, priority){hint}')
    if 'module_keys' not in args:
        raise UnknownKeysError(f'{name}: module_keys is required (e.g. "generator_ema")')
    cfg = args.get('interp_cfg') or {}
    if not isinstance(cfg, dict) or set(cfg) - _CFG_KEYS:
        raise UnknownKeysError(f'{name}: interp_cfg takes {sorted(_CFG_KEYS)}, got {cfg!r}')
    return GanSpec(kind=kind, args=args, priority=entry.get('priority'), raw=entry,
                   hook_class=kind.split('.')[1])


def flip(value: float) -> float:
    """``1 - value`` as a config would write it (12 significant digits: 0.9999 -> 0.0001, not
    9.9999999999989e-05; the last-bit difference is below what --native changes anyway)."""
    return float(f'{1.0 - value:.12g}')


def map_gan_exact(spec: GanSpec) -> MappedEntry:
    """mmedit hook -> ``LegacyExponentialMovingAverageHook`` (same arguments, same numbers)."""
    if spec.kind != MMEDIT:
        raise ValueError(f'{spec.kind} is not the mmedit 0.x hook')
    mapped = MappedEntry(spec=spec, new_type='LegacyExponentialMovingAverageHook')
    mapped.notes.append('mmedit ExponentialMovingAverageHook -> LegacyExponentialMovingAverageHook:'
                        ' mmedit\'s interpolation a + (b - a) * momentum under mmengine, bit for '
                        'bit; interp_cfg keeps mmedit\'s sense; needs custom_imports of '
                        'compat_ema.integrations.mmengine_plugin')
    return mapped


def map_gan_native(spec: GanSpec) -> MappedEntry:
    """mmedit hook -> mmagic's hook with the momenta flipped (``1 - m``, ``1 - m_nt``)."""
    if spec.kind != MMEDIT:
        raise ValueError(f'{spec.kind} is not the mmedit 0.x hook')
    a = spec.resolved()
    m, m_nt = a['momentum'], a['momentum_nontrainable']
    new_m, new_nt = flip(m), flip(m_nt)
    if not 0.0 < new_m < 1.0:
        raise ValueError(f'interp_cfg momentum={m!r}: mmagic needs 0 < 1 - momentum < 1 (it '
                         'asserts at the first update); use --exact')
    if not 0.0 < new_nt <= 1.0:
        raise ValueError(f'interp_cfg momentum_nontrainable={m_nt!r}: mmagic needs '
                         '0 < 1 - momentum_nontrainable <= 1; use --exact')
    mapped = MappedEntry(spec=spec, new_type='ExponentialMovingAverageHook')
    new_cfg = dict(momentum=new_m)
    if 'momentum_nontrainable' in (spec.args.get('interp_cfg') or {}) or new_nt != 1.0:
        new_cfg['momentum_nontrainable'] = new_nt
    if 'interp_cfg' in spec.args:
        mapped.revalue['interp_cfg'] = new_cfg
    else:
        mapped.insert['interp_cfg'] = new_cfg
    mapped.notes.append(f'momentum {m!r} (mmedit: weight of the old EMA) -> {new_m!r} (mmagic: '
                        f'weight of the new weights); momentum_nontrainable {m_nt!r} -> {new_nt!r}')
    mapped.notes.append('mmagic computes b + (a - b) * m, mmedit a + (b - a) * m: the same EMA in '
                        'exact arithmetic, different roundings (see the divergence below); '
                        '--exact keeps the legacy bits')
    if a['interval'] <= 0:
        mapped.notes.append(f'interval={a["interval"]}: neither hook updates after start_iter='
                            f'{a["start_iter"]} (the EMA stays a copy taken then)')
    return mapped


def gan_schedule(spec: GanSpec, iters: int) -> List[Step]:
    """Per iteration: 'copy' before ``start_iter``, then 'update' (momentum = weight of the new
    weights, whichever convention the hook uses) when ``(iter + 1 - start_iter) % interval == 0``."""
    a = spec.resolved()
    k, s = a['interval'], a['start_iter']
    w = a['momentum'] if spec.flipped else 1 - a['momentum']
    formula = 'momentum' if spec.flipped else f'1 - {a["momentum"]!r}'
    out = []
    for t in range(iters):
        if t < s:
            out.append(Step(t, 'copy', 1.0, f'iter < start_iter={s}: EMA := source'))
        elif k <= 0:
            out.append(Step(t, 'skip', 0.0, f'interval={k}: never after start_iter'))
        elif (t + 1 - s) % k:
            out.append(Step(t, 'skip', 0.0, f'(iter+1-{s}) % {k} = {(t + 1 - s) % k}'))
        else:
            out.append(Step(t, 'update', w, formula))
    return out


def gan_notes(spec: GanSpec) -> List[str]:
    a = spec.resolved()
    m, nt = a['momentum'], a['momentum_nontrainable']
    notes = []
    if spec.flipped:
        notes.append(f'mmagic 1.x: momentum={m!r} is the weight of the NEW weights; '
                     f'buffers/frozen parameters use momentum_nontrainable={nt!r}')
        if m > 0.5:
            notes.append(f'momentum={m!r} > 0.5 looks like an un-flipped mmedit 0.x value: '
                         f'mmagic averages almost nothing; mmedit\'s {m!r} is mmagic\'s '
                         f'{flip(m)!r}')
    else:
        notes.append(f'mmedit 0.x: momentum={m!r} is the weight of the OLD EMA (the new weights '
                     f'get {1 - m:.6g}); buffers/frozen parameters use momentum_nontrainable='
                     f'{nt!r} ({"copied" if nt == 0 else "averaged"})')
    if a['interval'] <= 0:
        notes.append(f'interval={a["interval"]} (the default is -1): the EMA is a copy of the '
                     f'source until start_iter={a["start_iter"]} and never changes afterwards')
    notes.append('gating: (iter + 1 - start_iter) % interval == 0, not mmcv\'s (iter + 1) % n')
    return notes


class _ToyGen(nn.Module):
    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(init.clone())
        self.frozen = nn.Parameter(init.clone(), requires_grad=False)
        self.register_buffer('stat', init.clone())


class _ToyPair(nn.Module):
    def __init__(self, init: torch.Tensor, keys):
        super().__init__()
        for key in ((keys,) if isinstance(keys, str) else tuple(keys)):
            setattr(self, key[:-4], _ToyGen(init))
            setattr(self, key, _ToyGen(init))


def divergence(old: Dict[str, Any], new: Dict[str, Any], iters: int) -> List[str]:
    """How the EMA of hook entry ``new`` moves from the mmedit entry ``old`` over ``iters`` calls.

    Both are driven by compat_ema's hooks (bitwise equal to the real ones) on a
    toy generator whose weights follow ``compare.toy_trajectory`` (a trainable
    tensor, a frozen one and a buffer, float32).
    """
    import types
    import warnings

    from ..registry import HOOKS
    from .compare import toy_trajectory
    traj = toy_trajectory(iters)
    finals = []
    per_iter = []
    for entry, scope in ((old, 'mmedit'), (new, None)):
        spec = classify_gan(entry, 'mmcv' if scope else 'mmengine')
        cfg = {k: v for k, v in entry.items() if k != 'priority'}
        cfg['type'] = spec.kind
        model = _ToyPair(traj[0], cfg['module_keys'])
        hook = HOOKS.build(cfg)
        runner = types.SimpleNamespace(model=model, iter=0)
        hook.before_run(runner)
        key = ((cfg['module_keys'],) if isinstance(cfg['module_keys'], str)
               else tuple(cfg['module_keys']))[0]
        rows = []
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for t in range(iters):
                src = getattr(model, key[:-4])
                for tensor in (src.w, src.frozen, src.stat):
                    tensor.data.copy_(traj[t + 1])
                runner.iter = t
                if spec.kind == MMEDIT:
                    hook.after_train_iter(runner)
                else:
                    hook.after_train_iter(runner, t)
                ema = getattr(model, key)
                rows.append(torch.stack([ema.w.detach(), ema.frozen.detach(), ema.stat]).clone())
        per_iter.append(torch.stack(rows))
        finals.append(rows[-1])
    a, b = per_iter
    same = [bool(torch.equal(a[t], b[t])) for t in range(iters)]
    if all(same):
        return [f'toy EMA: bitwise equal at every one of {iters} iterations']
    first = same.index(False)
    gap = (a.double() - b.double()).abs()
    worst = int(gap.amax(dim=(1, 2)).argmax())
    n_diff = int((a != b).sum())
    return [f'toy EMA (float32; amplitude 1): first bitwise difference at iteration {first}; '
            f'{n_diff} of {a.numel()} values differ over {iters} iterations; max gap '
            f'{float(gap.max()):.3g} at iteration {worst}; final max gap '
            f'{float(gap[-1].max()):.3g}',
            'the gap is rounding (a few ulp per update), accumulated by the EMA; it is not a '
            'change of the averaging schedule']
