"""Legacy EMA hook entry -> mmengine ``EMAHook`` entry, exact or native.

*Exact* (bitwise-equal EMA to the legacy run): mmengine's ``EMAHook`` with one
of compat_ema's legacy-numerics averaged models, registered into mmengine by
the plugin module :data:`PLUGIN` (named in ``custom_imports``):

====================================  ==============================================
legacy entry                          exact mmengine entry
====================================  ==============================================
mmcv ``EMAHook``                      ``ema_type='LegacyMMCVEMA'`` (momentum, interval, warm_up)
mmdet ``ExpMomentumEMAHook``          ``ema_type='LegacyExpMomentumEMA'`` (+ skip_buffers, total_iter)
mmdet ``LinearMomentumEMAHook``       ``ema_type='LegacyLinearMomentumEMA'`` (+ skip_buffers, warm_up)
====================================  ==============================================

*Native* (only mmengine's own types; the numbers move, see
:mod:`compat_ema.migrate.compare`):

* mmcv ``EMAHook(m, k, warm_up)`` -> ``ExponentialMovingAverage(momentum=m**k,
  interval=k)``: same update iterations (0, k, 2k...; mmengine copies at the
  first), the momentum legacy actually used; ``warm_up`` has no native
  equivalent (MomentumAnnealingEMA anneals the other way).
* mmdet ``LinearMomentumEMAHook`` -> the same with ``update_buffers = not
  skip_buffers`` and ``begin_iter=k`` when ``k > 1`` (which moves mmengine's
  updates onto mmdet's iterations k-1, 2k-1...).
* mmdet ``ExpMomentumEMAHook(m, total_iter=T)`` -> whichever of
  ``MomentumAnnealingEMA(momentum=m, gamma=...)`` (gamma ``round(T ln 2)``, the
  same midpoint, ``T/4`` or ``T/20``) and ``ExponentialMovingAverage(momentum=m)``
  gives the final EMA closest to legacy over the run's length: annealing for
  short runs, constant momentum once the run is much longer than ``1/m``
  (its hyperbolic tail never meets the exponential one); mmdet 3.x /
  mmyolo's ``ExpMomentumEMA(gamma=T)`` is the exact formula outside mmengine.

``resume_from`` on the hook is dropped: under mmengine the runner resumes
(``resume=True``, ``load_from=...``) and restores the EMA from
``ema_state_dict``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List

from .hookspec import HookSpec

__all__ = ['PLUGIN', 'EXACT_TYPES', 'MappedEntry', 'map_exact', 'map_native',
           'exp_to_annealing_gamma']

#: the module that registers compat_ema's types into mmengine's registries
PLUGIN = 'compat_ema.integrations.mmengine_plugin'

#: legacy hook kind -> legacy-numerics averaged model (compat_ema.legacy)
EXACT_TYPES = {
    'mmcv.EMAHook': 'LegacyMMCVEMA',
    'mmdet.ExpMomentumEMAHook': 'LegacyExpMomentumEMA',
    'mmdet.LinearMomentumEMAHook': 'LegacyLinearMomentumEMA',
    'mmdet.BaseEMAHook': 'LegacyMMDetEMA',
}


@dataclass
class MappedEntry:
    """How one legacy entry becomes an mmengine entry, as edits on the original.

    Attributes:
        new_type: the value of ``type``.
        insert: keys added right after ``type`` (ordered), with values.
        drop: keys removed.
        rename: old key -> new key.
        revalue: key (after renaming) -> new value.
        resume_from: the hook's ``resume_from`` value when it had one (moved to the runner).
        notes: what changed and why.
    """

    spec: HookSpec
    new_type: str = 'EMAHook'
    insert: Dict[str, Any] = field(default_factory=dict)
    drop: List[str] = field(default_factory=list)
    rename: Dict[str, str] = field(default_factory=dict)
    revalue: Dict[str, Any] = field(default_factory=dict)
    resume_from: Any = None
    has_resume_from: bool = False
    notes: List[str] = field(default_factory=list)

    def new_entry(self) -> Dict[str, Any]:
        """The migrated entry as a dict (key order as it will be written)."""
        out: Dict[str, Any] = {}
        for k, v in self.spec.raw.items():
            if k == 'type':
                out['type'] = self.new_type
                out.update(self.insert)
                continue
            if k in self.drop:
                continue
            nk = self.rename.get(k, k)
            out[nk] = self.revalue.get(nk, v)
        if 'type' not in out:  # pragma: no cover - classify() requires a type
            out = dict(type=self.new_type, **self.insert, **out)
        return out


def _base(spec: HookSpec) -> MappedEntry:
    mapped = MappedEntry(spec=spec)
    if 'resume_from' in spec.args:
        mapped.drop.append('resume_from')
        mapped.has_resume_from = True
        mapped.resume_from = spec.args['resume_from']
    return mapped


def map_exact(spec: HookSpec, legacy_swap: bool = False) -> MappedEntry:
    """The bitwise-exact mmengine entry for a legacy ``spec``.

    ``legacy_swap``: ``LegacyEMAHook`` instead of mmengine's ``EMAHook``, so the
    model also holds the EMA weights after each train epoch and after training.
    """
    if spec.kind not in EXACT_TYPES:
        raise ValueError(f'{spec.kind} is not a legacy EMA hook')
    mapped = _base(spec)
    mapped.insert['ema_type'] = EXACT_TYPES[spec.kind]
    if legacy_swap:
        mapped.new_type = 'LegacyEMAHook'
    mapped.notes.append(f'{spec.kind} -> {mapped.new_type}(ema_type={EXACT_TYPES[spec.kind]!r}): '
                        'legacy numerics under mmengine (same initial clone, momentum formula, '
                        'gating and tracked tensors); needs custom_imports of ' + PLUGIN)
    if legacy_swap:
        mapped.notes.append('LegacyEMAHook: the legacy swap points too (EMA weights in the model '
                            'after every train epoch and after training)')
    else:
        mapped.notes.append("mmengine's swap points: EMA weights in the model around val/test "
                            'only (--legacy-swap for the legacy ones)')
    return mapped


def exp_to_annealing_gamma(total_iter: float) -> int:
    """``gamma`` of MomentumAnnealingEMA whose midpoint matches ExpMomentumEMAHook's.

    ``exp(-(1+t)/T) = 1/2`` at ``t = T ln 2 - 1`` and ``gamma/(gamma+t) = 1/2`` at
    ``t = gamma``: ``gamma = round(T ln 2)`` (at least 1).
    """
    return max(1, int(round(total_iter * math.log(2))))


def _pick_exp_replacement(spec: HookSpec, iters: int):
    """The MomentumAnnealingEMA gamma (or None: constant momentum) closest over ``iters``.

    Candidates: gamma = round(T ln 2) (same midpoint), T/4, T/20, and plain
    ExponentialMovingAverage; the winner has the smallest
    :func:`~compat_ema.migrate.compare.weight_distance` of the final EMA.
    """
    from .compare import weight_distance
    from .hookspec import classify
    from .schedule import momentum_schedule
    a = spec.resolved()
    T, m = a['total_iter'], a['momentum']
    legacy = momentum_schedule(spec, iters, explain=False)
    options = []
    for g in dict.fromkeys([exp_to_annealing_gamma(T), max(1, round(T / 4)),
                            max(1, round(T / 20))]):
        options.append((g, f'MomentumAnnealingEMA(gamma={g})',
                        dict(type='EMAHook', ema_type='MomentumAnnealingEMA', momentum=m, gamma=g)))
    options.append((None, 'ExponentialMovingAverage',
                    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=m)))
    k = a['interval']
    table = []
    for g, name, entry in options:
        entry['interval'] = k
        if k > 1:
            entry['begin_iter'] = k
        d = weight_distance(legacy, momentum_schedule(classify(entry, 'mmengine'), iters,  # type: ignore[arg-type]
                                                      explain=False))
        table.append((g, name, d))
    best = min(table, key=lambda r: r[2])
    return best[0], [(name, d) for _, name, d in table]


def map_native(spec: HookSpec, iters: int = 10000) -> MappedEntry:
    """The closest entry using only mmengine's own averaged models.

    ``iters``, the length of the run, decides the ExpMomentumEMAHook
    replacement (see :func:`_pick_exp_replacement`).
    """
    if spec.kind not in EXACT_TYPES:
        raise ValueError(f'{spec.kind} is not a legacy EMA hook')
    a = spec.resolved()
    mapped = _base(spec)
    m, k = a['momentum'], a['interval']
    if spec.kind in ('mmcv.EMAHook', 'mmdet.LinearMomentumEMAHook'):
        mk = m ** k
        if not 0 < mk < 1:
            raise ValueError(f'{spec.kind}: momentum**interval = {m!r}**{k} = {mk!r} is not in '
                             '(0, 1); mmengine cannot take it')
        mapped.insert['ema_type'] = 'ExponentialMovingAverage'
        if k != 1:
            mapped.revalue['momentum'] = mk
            if 'momentum' not in spec.args:
                mapped.insert['momentum'] = mk
            mapped.notes.append(f'momentum {m:g} with interval {k}: legacy used {m:g}**{k} = '
                                f'{mk:.6g} per update; kept ({m:g} would drop the quirk)')
        if 'warm_up' in spec.args:
            mapped.drop.append('warm_up')
        w = a['warm_up']
        bites = w > 1 and mk * w > 1
        mapped.notes.append(
            f'warm_up={w} dropped: no mmengine equivalent; '
            + ('it capped the legacy momentum early on (see the report)' if bites else
               f'it never had an effect (1/warm_up = {1 / w:g} >= {mk:.6g})' if w > 1 else
               'it never had an effect'))
    elif spec.kind == 'mmdet.BaseEMAHook':
        mapped.insert['ema_type'] = 'ExponentialMovingAverage'
        mapped.notes.append('BaseEMAHook (constant momentum) -> ExponentialMovingAverage; mmdet '
                            '2.28 does not register BaseEMAHook, so this config registered it')
    else:  # ExpMomentumEMAHook
        T = a['total_iter']
        if 'total_iter' in spec.args:
            mapped.drop.append('total_iter')
        gamma, table = _pick_exp_replacement(spec, iters)
        if gamma is None:
            mapped.insert['ema_type'] = 'ExponentialMovingAverage'
            mapped.notes.append(
                f'ExpMomentumEMAHook(total_iter={T}) -> ExponentialMovingAverage(momentum={m:g}): '
                f'over {iters} iterations the exp decay is forgotten; constant momentum is closest')
        else:
            mapped.insert['ema_type'] = 'MomentumAnnealingEMA'
            mapped.insert['gamma'] = gamma
            mapped.notes.append(
                f'ExpMomentumEMAHook(total_iter={T}) -> MomentumAnnealingEMA(gamma={gamma}): '
                'max(m, gamma/(gamma+steps)) instead of (1-m)*exp(-(1+iter)/T)+m; its tail is '
                'hyperbolic, so it drifts away from the exp schedule on long runs')
        mapped.notes.append(
            f'candidates over {iters} iterations (share of the final EMA from different '
            'iterations): ' + ', '.join(f'{name} {100 * d:.3g}%' for name, d in table))
        mapped.notes.append(
            f"mmdet 3.x / mmyolo have the exact formula (steps-based): dict(type='EMAHook', "
            f"ema_type='ExpMomentumEMA', momentum={m!r}, gamma={T!r}, "
            f"update_buffers={not a['skip_buffers']!r}) with default_scope mmdet/mmyolo")
    if spec.kind.startswith('mmdet.'):
        skip = a['skip_buffers']
        if 'skip_buffers' in spec.args:
            mapped.rename['skip_buffers'] = 'update_buffers'
            mapped.revalue['update_buffers'] = not skip
        elif not skip:
            mapped.insert['update_buffers'] = True
        mapped.notes.append(f'skip_buffers={skip} -> update_buffers={not skip} (inverted; '
                            'mmengine defaults to False, mmdet 2.x to averaging buffers)')
        if k > 1:
            mapped.insert['begin_iter'] = k
            mapped.notes.append(f'begin_iter={k}: puts mmengine updates on mmdet\'s iterations '
                                f'{k - 1}, {2 * k - 1}, ... ((iter+1) % {k} == 0; the first '
                                'is a copy)')
    mapped.notes.append('first update: legacy blends the initial clone, mmengine copies; '
                        'update op: legacy mul_+add_, mmengine lerp_ (last-bit rounding)')
    return mapped
