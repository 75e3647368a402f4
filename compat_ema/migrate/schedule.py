"""The momentum schedule of any EMA hook config, iteration by iteration.

For a :class:`~compat_ema.migrate.hookspec.HookSpec` of any generation,
:func:`momentum_schedule` lists what the hook does after each training
iteration: ``update`` with an effective momentum, ``skip``, ``copy`` (the
mmengine averaged models' first update) or ``hold`` (mmengine ``EMAHook``
before ``begin_iter``/``begin_epoch``: the EMA is overwritten by the source).
The *momentum* column is the weight the source gets in the new EMA value, so
a skip is 0 and a copy is 1 (``ema <- (1 - m) * ema + m * src``).

The values are computed as upstream computes them, in Python floats:

* mmcv ``EMAHook``: update when ``iter % interval == 0`` with
  ``min(momentum ** interval, (1 + iter) / (warm_up + iter))``;
* mmdet 2.x: update when ``(iter + 1) % interval == 0``; Base: ``momentum``;
  Exp: ``(1 - m) * exp(-(1 + iter) / total_iter) + m``; Linear: as mmcv;
* mmengine ``EMAHook``: started when ``iter + 1 >= begin_iter`` (or
  ``epoch + 1 >= begin_epoch``); then the averaged model copies at
  ``steps == 0`` and averages when ``steps % interval == 0``:
  ExponentialMovingAverage ``momentum``; MomentumAnnealingEMA
  ``max(momentum, gamma / (gamma + steps))``; StochasticWeightAverage
  ``1 / (steps // interval + 1)``; mmdet 3.x / mmyolo ExpMomentumEMA
  ``(1 - m) * exp(-(1 + steps) / gamma) + m``; compat's ``Legacy*`` types the
  legacy hook's rule with ``iter`` = the number of update calls before this
  one (the runner iteration when EMA starts at iteration 0).

:func:`schedule_notes` explains the quirks these produce (``momentum **
interval``, a warm-up that never bites, the gating offsets).
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence

from .hookspec import HookSpec

__all__ = ['Step', 'momentum_schedule', 'schedule_notes', 'format_table', 'plot_schedules',
           'MatplotlibMissing']


class Step(NamedTuple):
    """What a hook does after training iteration ``iter`` (0-based)."""

    iter: int
    action: str  #: 'update', 'skip', 'copy' or 'hold'
    momentum: float  #: weight of the source in the new EMA: 0 for skip, 1 for copy/hold
    formula: str = ''


def _legacy_step(kind: str, a: Dict, t: int, explain: bool = True) -> Step:
    """The legacy hook's decision at iteration ``t``."""
    m, k = a['momentum'], a['interval']
    if kind in ('mmcv.EMAHook', 'LegacyMMCVEMA'):
        if t % k != 0:
            return Step(t, 'skip', 0.0, f'iter % {k} = {t % k}' if explain else '')
        return _linear(t, m ** k, a['warm_up'], explain)
    if (t + 1) % k != 0:
        return Step(t, 'skip', 0.0, f'(iter+1) % {k} = {(t + 1) % k}' if explain else '')
    if kind in ('mmdet.ExpMomentumEMAHook', 'LegacyExpMomentumEMA'):
        T = a['total_iter']
        val = (1 - m) * math.exp(-(1 + t) / T) + m
        return Step(t, 'update', val, f'(1-{m:g})*exp(-{1 + t}/{T})+{m:g}' if explain else '')
    if kind in ('mmdet.LinearMomentumEMAHook', 'LegacyLinearMomentumEMA'):
        return _linear(t, m ** k, a['warm_up'], explain)
    return Step(t, 'update', m, 'momentum')  # BaseEMAHook / LegacyMMDetEMA


def _linear(t: int, mk: float, warm_up, explain: bool = True) -> Step:
    if warm_up + t == 0:
        raise ValueError(f'warm_up={warm_up}: (1 + iter) / (warm_up + iter) divides by zero at '
                         f'iter {t} (upstream raises ZeroDivisionError)')
    cap = (1 + t) / (warm_up + t)
    val = min(mk, cap)
    if not explain:
        return Step(t, 'update', val, '-> ' + ('m' if val == mk else 'cap'))
    side = 'momentum**interval' if val == mk else 'warm-up cap'
    return Step(t, 'update', val, f'min({mk:.6g}, {1 + t}/{warm_up + t}={cap:.6g}) -> {side}')


_LEGACY_TYPES = {'LegacyMMCVEMA': 'mmcv.EMAHook', 'LegacyMMDetEMA': 'mmdet.BaseEMAHook',
                 'LegacyExpMomentumEMA': 'mmdet.ExpMomentumEMAHook',
                 'LegacyLinearMomentumEMA': 'mmdet.LinearMomentumEMAHook'}


def momentum_schedule(spec: HookSpec, iters: int, iters_per_epoch: Optional[int] = None,
                      explain: bool = True) -> List[Step]:
    """The decision and effective momentum of ``spec`` at iterations ``0 .. iters-1``.

    ``iters_per_epoch`` is needed only for mmengine's ``begin_epoch``;
    ``explain=False`` leaves the formula strings out (much faster).
    """
    if iters < 0:
        raise ValueError(f'iters must be >= 0, got {iters}')
    if type(spec).__name__ == 'GanSpec':  # mmedit 0.x / mmagic 1.x ExponentialMovingAverageHook
        from .gan import gan_schedule
        return gan_schedule(spec, iters)
    a = spec.resolved()
    _validate(spec, a)
    if spec.is_legacy:
        return [_legacy_step(spec.kind, a, t, explain) for t in range(iters)]
    return _mmengine_schedule(spec, a, iters, iters_per_epoch, explain)


def _validate(spec: HookSpec, a: Dict) -> None:
    """Reject arguments upstream would reject (with upstream's reasons)."""
    ema_type = spec.ema_type
    if 'momentum' in a and ema_type != 'StochasticWeightAverage':
        if not (isinstance(a['momentum'], (int, float)) and 0 < a['momentum'] < 1):
            raise ValueError(f'{spec.kind}: momentum must be in the open interval (0, 1), '
                             f'got {a["momentum"]!r}')
    k = a.get('interval', 1)
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f'{spec.kind}: interval must be an int > 0, got {k!r}')
    if not spec.is_legacy:
        if a['begin_iter'] and a['begin_epoch']:
            raise ValueError('mmengine.EMAHook: begin_iter and begin_epoch cannot both be set')
        if a['begin_iter'] < 0 or a['begin_epoch'] < 0:
            raise ValueError('mmengine.EMAHook: begin_iter/begin_epoch must be >= 0')
        if 'gamma' in a and not a['gamma'] > 0:
            raise ValueError(f'{ema_type}: gamma must be > 0, got {a["gamma"]!r}')


def _mmengine_schedule(spec: HookSpec, a: Dict, iters: int, ipe: Optional[int],
                       explain: bool = True) -> List[Step]:
    ema_type = spec.ema_type or 'ExponentialMovingAverage'
    by_epoch = a['begin_epoch'] > 0
    if by_epoch and not ipe:
        raise ValueError('begin_epoch is set: pass the number of iterations per epoch '
                         '(--iters-per-epoch)')
    k = a['interval']
    out: List[Step] = []
    steps = 0
    for t in range(iters):
        started = (t // ipe + 1 >= a['begin_epoch']) if by_epoch else (t + 1 >= a['begin_iter'])  # type: ignore[operator]
        if not started:
            why = (f'epoch+1 < begin_epoch={a["begin_epoch"]}' if by_epoch
                   else f'iter+1 < begin_iter={a["begin_iter"]}')
            out.append(Step(t, 'hold', 1.0, f'not started ({why}): EMA := source'))
            continue
        if ema_type in _LEGACY_TYPES:
            s = _legacy_step(_LEGACY_TYPES[ema_type], a, steps, explain)
            out.append(Step(t, s.action, s.momentum,
                            s.formula + f' [steps={steps}]' if explain else s.formula))
        elif steps == 0:
            out.append(Step(t, 'copy', 1.0, 'steps == 0: first update copies'))
        elif steps % k != 0:
            out.append(Step(t, 'skip', 0.0, f'steps % {k} = {steps % k}' if explain else ''))
        else:
            out.append(_averaged_step(t, ema_type, a, steps, explain))
        steps += 1
    return out


def _averaged_step(t: int, ema_type: str, a: Dict, steps: int, explain: bool = True) -> Step:
    m = a.get('momentum')
    if not explain:
        return Step(t, 'update', _averaged_momentum(ema_type, a, steps))
    if ema_type == 'ExponentialMovingAverage':
        return Step(t, 'update', m, 'momentum')  # type: ignore[arg-type]
    if ema_type == 'MomentumAnnealingEMA':
        g = a['gamma']
        ann = g / (g + steps)
        val = max(m, ann)
        return Step(t, 'update', val, f'max({m:g}, {g}/({g}+{steps})={ann:.6g})')
    if ema_type == 'StochasticWeightAverage':
        n = steps // a['interval'] + 1
        return Step(t, 'update', 1 / float(n), f'1/({steps}//{a["interval"]}+1)')
    if ema_type == 'ExpMomentumEMA':
        g = a['gamma']
        val = (1 - m) * math.exp(-float(1 + steps) / g) + m  # type: ignore[operator]
        return Step(t, 'update', val, f'(1-{m:g})*exp(-{1 + steps}/{g})+{m:g}')
    raise ValueError(f'no schedule for ema_type {ema_type!r}')  # pragma: no cover


def _averaged_momentum(ema_type: str, a: Dict, steps: int) -> float:
    if ema_type == 'ExponentialMovingAverage':
        return a['momentum']
    if ema_type == 'MomentumAnnealingEMA':
        return max(a['momentum'], a['gamma'] / (a['gamma'] + steps))
    if ema_type == 'StochasticWeightAverage':
        return 1 / float(steps // a['interval'] + 1)
    m = a['momentum']
    return (1 - m) * math.exp(-float(1 + steps) / a['gamma']) + m


def schedule_notes(spec: HookSpec, steps: Sequence[Step]) -> List[str]:
    """Plain-language notes on the quirks visible in ``steps``."""
    if type(spec).__name__ == 'GanSpec':
        from .gan import gan_notes
        return gan_notes(spec)
    a = spec.resolved()
    notes: List[str] = []
    kind = spec.kind if spec.is_legacy else _LEGACY_TYPES.get(spec.ema_type or '', None)
    k = a.get('interval', 1)
    if kind in ('mmcv.EMAHook', 'mmdet.LinearMomentumEMAHook'):
        m, w = a['momentum'], a['warm_up']
        mk = m ** k
        if k > 1:
            notes.append(f'momentum**interval: every update uses {m:g}**{k} = {mk:.6g}, not {m:g} '
                         '(a larger interval makes the EMA move less, not more)')
        if w > 1 and mk * w <= 1:
            notes.append(f'warm-up has no effect: (1+t)/(warm_up+t) >= 1/warm_up = {1 / w:g} >= '
                         f'{mk:.6g} at every iteration, so the momentum is {mk:.6g} throughout '
                         f'(it would need warm_up > {1 / mk:g})')
        elif w > 1:
            last = math.ceil((mk * w - 1) / (1 - mk)) - 1
            notes.append(f'warm-up caps the momentum below {mk:.6g} up to iteration {last}: '
                         'early updates are *slower*, the opposite of a usual warm-up')
        elif w <= 1:
            notes.append(f'warm_up={w} <= 1: the cap (1+t)/(warm_up+t) is >= 1, no effect')
    if kind is not None and k > 1:
        first = [s.iter for s in steps if s.action == 'update'][:3]
        rule = 'iter % interval == 0' if kind == 'mmcv.EMAHook' else '(iter+1) % interval == 0'
        notes.append(f'gating: updates when {rule} -> iterations {first}...')
    if kind == 'mmdet.ExpMomentumEMAHook':
        T = a['total_iter']
        start = (1 - a['momentum']) * math.exp(-1 / T) + a['momentum']
        notes.append(f'exp decay: momentum starts at {start:.6g} '
                     f'and falls to {a["momentum"]:g} with time constant total_iter={T}')
    if not spec.is_legacy:
        if spec.ema_type in _LEGACY_TYPES:
            notes.append(f'{spec.ema_type}: legacy numerics under mmengine ({_LEGACY_TYPES[spec.ema_type]}); '
                         'the first update blends with the initial weights, as the legacy hook did')
        else:
            notes.append('mmengine: the first update copies the source (steps == 0); '
                         '`interval` counts update calls, not iterations')
        held = [s.iter for s in steps if s.action == 'hold']
        if held:
            notes.append(f'not started for iterations {held[0]}..{held[-1]}: the EMA is '
                         'overwritten with the source every iteration')
    return notes


def _branch(step: Step) -> str:
    return step.action + (step.formula.split('->')[-1] if '->' in step.formula else '')


def _pick_rows(steps: Sequence[Step], max_rows: int) -> List[int]:
    """All rows if they fit; else the first 10, the last 3, and where the decision changes."""
    n = len(steps)
    if n <= max_rows:
        return list(range(n))
    head, tail = set(range(10)), set(range(n - 3, n))
    middle = set()  # type: ignore[var-annotated]
    for i in range(1, n):
        if _branch(steps[i]) != _branch(steps[i - 1]):
            middle.update((i - 1, i))
    p = 16
    while p < n:
        middle.add(p - 1)
        p *= 2
    middle = sorted(middle - head - tail)  # type: ignore[assignment]
    room = max(0, max_rows - len(head) - len(tail))
    if len(middle) > room:
        stride = len(middle) / room if room else len(middle) + 1
        middle = [middle[int(i * stride)] for i in range(room)]  # type: ignore[assignment, index]
    return sorted(head | tail | set(middle))


def format_table(columns: Dict[str, Sequence[Step]], max_rows: int = 60,
                 show_formula: bool = True) -> str:
    """A text table: one row per iteration (condensed past ``max_rows``), one column per schedule."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    rows = _pick_rows(next(iter(columns.values())), max_rows) if n else []
    single = len(names) == 1
    widths = {name: 8 if single else max(8, len(name) + 7) for name in names}
    head = f'{"iter":>7}'
    for name in names:
        label = 'action' if single else name + ' action'
        head += f' | {label:>{widths[name]}} {"momentum":>12}'
    if show_formula and len(names) == 1:
        head += ' | formula'
    lines = [head, '-' * len(head)]
    prev = -1
    for i in rows:
        if i != prev + 1:
            lines.append(f'{"...":>7}')
        line = f'{i:>7}'
        for name in names:
            s = columns[name][i]
            line += f' | {s.action:>{widths[name]}} {s.momentum:>12.6g}'
        if show_formula and len(names) == 1:
            line += f' | {columns[names[0]][i].formula}'
        lines.append(line)
        prev = i
    return '\n'.join(lines)


class MatplotlibMissing(RuntimeError):
    """Plotting was asked for but matplotlib is not installed."""


def plot_schedules(columns: Dict[str, Sequence[Step]], out_path: str, title: str = '') -> str:
    """Plot effective momentum per iteration (log scale; skips as gaps) to ``out_path``."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing(
            "plotting needs matplotlib, which is not installed: pip install 'compat-ema[plot]' "
            '(or pip install matplotlib)') from None
    import io

    from ..core.atomic import write_new

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, steps in columns.items():
        xs = [s.iter for s in steps if s.momentum > 0]
        ys = [s.momentum for s in steps if s.momentum > 0]
        ax.plot(xs, ys, marker='.', markersize=3, linewidth=1, label=name)
    ax.set_yscale('log')
    ax.set_xlabel('iteration (0-based runner.iter)')
    ax.set_ylabel('effective momentum (weight of the new weights)')
    ax.set_title(title or 'EMA momentum per iteration (skips not drawn)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    write_new(out_path, lambda f: f.write(buf.getvalue()), force=True)
    return out_path
