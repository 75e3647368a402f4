"""How far the numbers move between a legacy EMA hook and its mmengine replacement.

:func:`compare` puts two hook configs side by side over a run of ``iters``
iterations:

* the effective momentum per iteration (:mod:`compat_ema.migrate.schedule`),
  the first iteration where it differs, and the largest relative difference
  ``|a - b| / max(a, b)`` (a skip counts as momentum 0, a copy as 1);
* the simulated EMA weight gap on a toy trajectory: a model whose 8 weights
  follow a fixed, deterministic signal (:func:`toy_trajectory`) is averaged by
  compat_ema's own hook classes (the legacy hook driven like the mmcv
  runners drive it, the mmengine ``EMAHook`` like mmengine's Runner does), and
  the EMA weights are compared after every iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .hookspec import classify
from .schedule import Step, format_table, momentum_schedule

__all__ = ['Comparison', 'compare', 'toy_trajectory', 'simulate_ema', 'TOY_AMPLITUDE',
           'final_weights', 'weight_distance', 'side_by_side']

#: amplitude of the toy signal's oscillation (the gap is in these units)
TOY_AMPLITUDE = 1.0


class _Toy(nn.Module):
    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(init.clone())


def toy_trajectory(iters: int, n: int = 8) -> torch.Tensor:
    """``(iters + 1, n)`` float32 weights: row 0 is the initial model, row t+1 the weights after iteration t.

    Each weight drifts linearly, oscillates with its own period (7 to 400
    iterations) and starts 0.5 away from where training takes it, so the
    first-update rules (blend vs copy) show.
    """
    t = torch.arange(iters + 1, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    period = 7.0 * (400.0 / 7.0) ** (j / max(n - 1, 1))
    w = 0.3 * j / n + TOY_AMPLITUDE * torch.sin(2 * math.pi * t / period + j) + 1e-4 * t
    w[0] += 0.5
    return w.to(torch.float32)


def _runner(model: nn.Module, iters: int):
    from ..core.runner import SimpleRunner
    return SimpleRunner(model, max_iters=iters, max_epochs=1)


def simulate_ema(entry: Dict[str, Any], iters: int, generation: Optional[str] = None,
                 traj: Optional[torch.Tensor] = None) -> torch.Tensor:
    """EMA of the toy weights after each iteration, ``(iters, n)``, using compat_ema's hooks.

    ``entry`` is a hook config of any generation; compat_ema builds it from
    its registry (legacy numerics types are looked up in the ``legacy`` scope).
    """
    from ..registry import HOOKS
    spec = classify(entry, generation)
    if spec is None:
        raise ValueError(f'not an EMA hook entry: {entry!r}')
    traj = toy_trajectory(iters) if traj is None else traj
    model = _Toy(traj[0])
    runner = _runner(model, iters)
    cfg = {k: v for k, v in entry.items() if k not in ('priority', 'resume_from')}
    out = torch.empty(iters, traj.shape[1], dtype=torch.float32)
    if spec.is_legacy:
        cfg['type'] = spec.kind
        if spec.kind == 'mmdet.BaseEMAHook':  # unregistered, as upstream
            from ..mmdet import BaseEMAHook
            cfg['type'] = BaseEMAHook
        hook = HOOKS.build(cfg)
        hook.before_run(runner)
        for t in range(iters):
            model.w.data.copy_(traj[t + 1])
            runner.iter = t
            hook.after_train_iter(runner)
            out[t] = model.ema_w  # type: ignore[assignment]
        return out
    cfg['type'] = 'legacy.LegacyEMAHook' if spec.hook_class == 'LegacyEMAHook' else 'mmengine.EMAHook'
    if spec.ema_type and spec.ema_type.startswith('Legacy'):
        cfg['ema_type'] = 'legacy.' + spec.ema_type
    elif spec.ema_type == 'ExpMomentumEMA':
        cfg['ema_type'] = 'mmdet3.ExpMomentumEMA'
    else:
        cfg['ema_type'] = 'mmengine.' + (spec.ema_type or 'ExponentialMovingAverage')
    hook = HOOKS.build(cfg)
    hook.before_run(runner)
    hook.before_train(runner)
    for t in range(iters):
        model.w.data.copy_(traj[t + 1])
        runner.iter = t
        hook.after_train_iter(runner, batch_idx=t)
        out[t] = hook.ema_model.module.w
    return out


@dataclass
class Comparison:
    """Legacy vs replacement over a run (see the module docstring)."""

    legacy: List[Step]
    other: List[Step]
    first_diff: Optional[int]
    max_rel_diff: float
    max_rel_iter: Optional[int]
    max_gap: float
    max_gap_iter: int
    final_gap: float
    bitwise_equal: bool
    final_distance: float = 0.0
    sim_iters: int = 0

    def summary(self, other_name: str = 'native') -> List[str]:
        n = len(self.legacy)
        if self.first_diff is None:
            mom = f'effective momentum: identical at all {n} iterations'
        else:
            a, b = self.legacy[self.first_diff], self.other[self.first_diff]
            mom = (f'effective momentum: first differs at iteration {self.first_diff} '
                   f'(legacy {a.action} {a.momentum:.6g}, {other_name} {b.action} {b.momentum:.6g}); '
                   f'max relative difference {self.max_rel_diff:.3g} at iteration {self.max_rel_iter}')
        gap = ('toy EMA: bitwise equal at every iteration' if self.bitwise_equal else
               f'toy EMA weight gap (signal amplitude {TOY_AMPLITUDE:g}): max {self.max_gap:.3g} '
               f'at iteration {self.max_gap_iter}, {self.final_gap:.3g} after iteration '
               f'{self.sim_iters - 1}')
        if self.bitwise_equal or self.sim_iters < n:
            gap += f' (simulated the first {self.sim_iters} of {n} iterations)' \
                if self.sim_iters < n else f' (simulated {n} iterations)'
        mix = (f'final EMA mixture: {100 * self.final_distance:.3g}% of it comes from different '
               'iterations (total-variation distance of the weights each iterate gets)')
        return [mom, mix, gap]


def final_weights(steps: List[Step]) -> torch.Tensor:
    """Share of each source in the final EMA: ``[initial clone, iterate 0, ..., iterate N-1]``.

    The EMA is linear in the weights it has seen: after ``ema <- (1-m_t) ema +
    m_t p_t`` for every ``t``, iterate ``p_t`` carries ``m_t * prod_{s>t}(1-m_s)``
    and the initial clone ``prod_t (1-m_t)`` (float64).
    """
    m = torch.tensor([s.momentum for s in steps], dtype=torch.float64)
    keep = 1 - m
    suffix = torch.flip(torch.cumprod(torch.flip(keep, [0]), 0), [0])  # prod_{s>=t}
    after = torch.cat([suffix[1:], torch.ones(1, dtype=torch.float64)])  # prod_{s>t}
    init = suffix[:1] if len(steps) else torch.ones(1, dtype=torch.float64)
    return torch.cat([init, m * after])


def weight_distance(a: List[Step], b: List[Step]) -> float:
    """Total-variation distance of :func:`final_weights`: the share of the final EMA drawn
    from different iterations (0 = same mixture, 1 = disjoint), independent of any signal."""
    return float(0.5 * (final_weights(a) - final_weights(b)).abs().sum())


def _rel(a: float, b: float) -> float:
    d = max(abs(a), abs(b))
    return 0.0 if d == 0 else abs(a - b) / d


def compare(legacy: Dict[str, Any], other: Dict[str, Any], iters: int,
            legacy_generation: str = 'mmcv', sim_iters: Optional[int] = None) -> Comparison:
    """Compare hook config ``legacy`` with ``other`` (an mmengine entry) over ``iters`` iterations.

    The toy simulation runs the first ``sim_iters`` iterations (default: all).
    """
    if iters < 1:
        raise ValueError('iters must be >= 1')
    ls = classify(legacy, legacy_generation)
    os_ = classify(other, 'mmengine')
    if ls is None or os_ is None:
        raise ValueError('both entries must be EMA hooks')
    a = momentum_schedule(ls, iters)
    b = momentum_schedule(os_, iters)
    first = next((i for i, (x, y) in enumerate(zip(a, b))
                  if x.momentum != y.momentum or (x.action == 'skip') != (y.action == 'skip')), None)
    rels = [_rel(x.momentum, y.momentum) for x, y in zip(a, b)]
    mx = max(rels)
    n_sim = iters if sim_iters is None else max(1, min(iters, sim_iters))
    traj = toy_trajectory(n_sim)
    ea = simulate_ema(legacy, n_sim, legacy_generation, traj)
    eb = simulate_ema(other, n_sim, 'mmengine', traj)
    gaps = (ea.double() - eb.double()).abs().amax(dim=1)
    gi = int(torch.argmax(gaps))
    return Comparison(legacy=a, other=b, first_diff=first, max_rel_diff=mx,
                      max_rel_iter=rels.index(mx) if mx > 0 else None,
                      max_gap=float(gaps[gi]), max_gap_iter=gi, final_gap=float(gaps[-1]),
                      bitwise_equal=bool(torch.equal(ea, eb)),
                      final_distance=weight_distance(a, b), sim_iters=n_sim)


def side_by_side(cmp: Comparison, names: Tuple[str, str] = ('legacy', 'native'),
                 max_rows: int = 40) -> str:
    """The two momentum schedules as one table."""
    return format_table({names[0]: cmp.legacy, names[1]: cmp.other}, max_rows=max_rows,
                        show_formula=False)
