"""Every public method of every averaged model, called directly, against float64 formulas.

The classes: mmengine's ``ExponentialMovingAverage``, ``MomentumAnnealingEMA`` and
``StochasticWeightAverage``; mmdet 3.x's and mmyolo's ``ExpMomentumEMA``; the legacy-numerics
``LegacyMMCVEMA``, ``LegacyMMDetEMA``, ``LegacyExpMomentumEMA``, ``LegacyLinearMomentumEMA``.
Their methods: ``avg_func`` (which the fast update bypasses, so it is tested on its own),
``update_parameters`` (fast and faithful paths), ``forward``, and each momentum rule
(``annealed_momentum``, ``current_momentum``, ``exp_momentum``, ``momentum_at``,
``should_update``). Expected values are the upstream formulas evaluated in float64 here (the
weights in Python doubles, as upstream computes them), with a tolerance of a few float32
roundings; the momenta and weights are chosen large enough that a wrong weight, a wrong step
or a swapped operand is off by orders of magnitude more than that. The same checks against the
real upstream classes, bit for bit, are in ``tests/oracle/test_averaged_models_oracle.py``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple

import pytest
import torch
import torch.nn as nn

from compat_ema.legacy import (LegacyExpMomentumEMA, LegacyLinearMomentumEMA, LegacyMMCVEMA,
                               LegacyMMDetEMA)
from compat_ema.mmdet3 import ExpMomentumEMA as MMDet3EMA
from compat_ema.mmdet3 import exp_momentum
from compat_ema.mmengine import ExponentialMovingAverage, MomentumAnnealingEMA, StochasticWeightAverage
from compat_ema.mmyolo.models.layers.ema import ExpMomentumEMA as MMYoloEMA
from helpers import fast_path

M = 0.1      # momentum: large enough that every weight formula is far from its neighbours
GAMMA = 7    # annealing lengths: the weight changes by percents per step
K = 3        # interval


class Case(NamedTuple):
    make: Callable[[nn.Module], nn.Module]
    #: float64 weight of the new value at ``steps`` (Python doubles, as upstream)
    weight: Callable[[int], float]
    #: 'lerp' (a + w (s - a)), 'mul_add' (a (1 - w) + s w) or 'swa' (a + (s - a) w)
    kind: str
    #: which calls average: ``steps -> bool`` (calls in between only copy buffers)
    averages: Callable[[int], bool]


def _mmcv_w(it: int) -> float:
    return min(M ** K, (1 + it) / (GAMMA + it))


CASES: Dict[str, Case] = {
    'mmengine.ExponentialMovingAverage': Case(
        lambda m: ExponentialMovingAverage(m, momentum=M, interval=K),
        lambda s: M, 'lerp', lambda s: s % K == 0),
    'mmengine.MomentumAnnealingEMA': Case(
        lambda m: MomentumAnnealingEMA(m, momentum=M, gamma=GAMMA, interval=K),
        lambda s: max(M, GAMMA / (GAMMA + s)), 'lerp', lambda s: s % K == 0),
    'mmengine.StochasticWeightAverage': Case(
        lambda m: StochasticWeightAverage(m, interval=K),
        lambda s: 1 / float(s // K + 1), 'swa', lambda s: s % K == 0),
    'mmdet3.ExpMomentumEMA': Case(
        lambda m: MMDet3EMA(m, momentum=M, gamma=GAMMA, interval=K),
        lambda s: (1 - M) * math.exp(-float(1 + s) / GAMMA) + M, 'mul_add', lambda s: s % K == 0),
    'mmyolo.ExpMomentumEMA': Case(
        lambda m: MMYoloEMA(m, momentum=M, gamma=GAMMA, interval=K),
        lambda s: (1 - M) * math.exp(-float(1 + s) / GAMMA) + M, 'lerp', lambda s: s % K == 0),
    'legacy.LegacyMMCVEMA': Case(
        lambda m: LegacyMMCVEMA(m, momentum=M, interval=K, warm_up=GAMMA),
        _mmcv_w, 'mul_add', lambda it: it % K == 0),
    'legacy.LegacyMMDetEMA': Case(
        lambda m: LegacyMMDetEMA(m, momentum=M, interval=K),
        lambda it: M, 'mul_add', lambda it: (it + 1) % K == 0),
    'legacy.LegacyExpMomentumEMA': Case(
        lambda m: LegacyExpMomentumEMA(m, momentum=M, total_iter=GAMMA, interval=K),
        lambda it: (1 - M) * math.exp(-(1 + it) / GAMMA) + M, 'mul_add', lambda it: (it + 1) % K == 0),
    'legacy.LegacyLinearMomentumEMA': Case(
        lambda m: LegacyLinearMomentumEMA(m, momentum=M, warm_up=GAMMA, interval=K),
        lambda it: min(M ** K, (1 + it) / (GAMMA + it)), 'mul_add', lambda it: (it + 1) % K == 0),
}
LEGACY = {name for name in CASES if name.startswith('legacy.')}


def expected(kind: str, a: torch.Tensor, s: torch.Tensor, w: float) -> torch.Tensor:
    a, s = a.double(), s.double()
    if kind == 'lerp':
        return a + w * (s - a)
    if kind == 'mul_add':
        return a * (1 - w) + s * w
    return a + (s - a) * w


def assert_near(got: torch.Tensor, want64: torch.Tensor, rounds: int = 4) -> None:
    """``got`` (float32) within ``rounds`` float32 roundings of the float64 value."""
    tol = rounds * torch.finfo(torch.float32).eps * (want64.abs() + 1)
    err = (got.double() - want64).abs()
    assert bool((err <= tol).all()), f'max error {float(err.max()):.3g}, tolerance {float(tol.max()):.3g}'


class Net(nn.Module):
    """Small and large float32 parameters, a BatchNorm (float buffers and a long counter)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(37, 300)      # 11,100 weights: over the flat-buffer limit
        self.bn = nn.BatchNorm1d(300)
        self.head = nn.Linear(300, 5)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net


def _perturb(net: nn.Module, t: int) -> None:
    g = torch.Generator().manual_seed(100 + t)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        net.bn.running_mean.add_(torch.randn(300, generator=g))
        net.bn.num_batches_tracked += 1


# ----------------------------------------------------------------------------- avg_func

@pytest.mark.parametrize('steps', [0, 1, 2, 5, 37])
@pytest.mark.parametrize('name', sorted(CASES))
def test_avg_func_is_the_formula(name, steps):
    case = CASES[name]
    ema = case.make(_net())
    g = torch.Generator().manual_seed(steps)
    a = torch.randn(1031, generator=g)
    s = torch.randn(1031, generator=g)
    a0, s0 = a.clone(), s.clone()
    ema.steps.fill_(steps)                           # as during update_parameters
    ret = ema.avg_func(a, s, ema.steps)              # upstream passes the steps tensor
    assert ret is None
    assert torch.equal(s, s0)                        # the source is only read
    assert_near(a, expected(case.kind, a0, s0, case.weight(steps)))


@pytest.mark.parametrize('name', sorted(CASES))
def test_avg_func_takes_an_int_step_too(name):
    case = CASES[name]
    ema = case.make(_net())
    a, s = torch.zeros(8), torch.ones(8)
    ema.steps.fill_(4)
    ema.avg_func(a, s, 4)
    assert_near(a, expected(case.kind, torch.zeros(8), torch.ones(8), case.weight(4)))


def test_annealing_avg_func_reads_its_own_steps():
    """Upstream's quirk: ``MomentumAnnealingEMA.avg_func`` ignores its ``steps`` argument and
    anneals by ``self.steps`` (mmengine 0.10.7, ``self.steps.item()``)."""
    ema = MomentumAnnealingEMA(_net(), momentum=M, gamma=GAMMA)
    ema.steps.fill_(3)
    a, s = torch.zeros(8), torch.ones(8)
    ema.avg_func(a, s, torch.tensor(50))
    assert_near(a, expected('lerp', torch.zeros(8), torch.ones(8), max(M, GAMMA / (GAMMA + 3))))


# ----------------------------------------------------------------------------- update_parameters

def _reference(name: str, n_calls: int, update_buffers: bool):
    """float64 replay of ``n_calls`` updates: {key: tensor} of the averaged model after each."""
    case = CASES[name]
    net = _net()
    avg = {k: v.detach().double().clone() for k, v in net.state_dict().items()}
    averaged = (list(net.state_dict()) if update_buffers else [k for k, _ in net.named_parameters()])
    out = []
    for t in range(n_calls):
        _perturb(net, t)
        src = net.state_dict()
        if t == 0 and name not in LEGACY:
            avg = {k: v.detach().double().clone() for k, v in src.items()}  # first call copies
        elif case.averages(t):
            for k in averaged:
                if src[k].dtype.is_floating_point:   # integer buffers are never averaged
                    avg[k] = expected(case.kind, avg[k], src[k], case.weight(t))
        # untracked buffers: copied every call; mmyolo's generator only on the first call
        if not update_buffers and (name != 'mmyolo.ExpMomentumEMA' or t == 0):
            for k, b in net.named_buffers():
                avg[k] = b.detach().double().clone()
        out.append(dict(avg))
    return out


def _make(name: str, net: nn.Module, update_buffers: bool):
    if name == 'legacy.LegacyMMCVEMA':
        assert not update_buffers
        return CASES[name].make(net)
    ema = CASES[name].make(net)
    kw = dict(skip_buffers=not update_buffers) if name in LEGACY else dict(update_buffers=update_buffers)
    return type(ema)(net, **{**_ARGS[name], **kw})


_ARGS = {
    'mmengine.ExponentialMovingAverage': dict(momentum=M, interval=K),
    'mmengine.MomentumAnnealingEMA': dict(momentum=M, gamma=GAMMA, interval=K),
    'mmengine.StochasticWeightAverage': dict(interval=K),
    'mmdet3.ExpMomentumEMA': dict(momentum=M, gamma=GAMMA, interval=K),
    'mmyolo.ExpMomentumEMA': dict(momentum=M, gamma=GAMMA, interval=K),
    'legacy.LegacyMMDetEMA': dict(momentum=M, interval=K),
    'legacy.LegacyExpMomentumEMA': dict(momentum=M, total_iter=GAMMA, interval=K),
    'legacy.LegacyLinearMomentumEMA': dict(momentum=M, warm_up=GAMMA, interval=K),
}
UPDATE_CASES = [(n, False) for n in sorted(CASES)] + [(n, True) for n in sorted(_ARGS)]


@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'faithful'])
@pytest.mark.parametrize('name,update_buffers', UPDATE_CASES)
def test_update_parameters_follows_the_formula(name, update_buffers, fast):
    n = 8
    ref = _reference(name, n, update_buffers)
    net = _net()
    ema = _make(name, net, update_buffers)
    assert ema.update_buffers is update_buffers
    with fast_path(fast):
        for t in range(n):
            _perturb(net, t)
            ema.update_parameters(net)
            assert int(ema.steps) == t + 1
            got = ema.module.state_dict()
            for k, want in ref[t].items():
                if got[k].dtype.is_floating_point:
                    assert_near(got[k], want, rounds=8 * (t + 1))
                else:
                    assert int(got[k]) == int(want), (t, k)


@pytest.mark.parametrize('name', sorted(LEGACY))
def test_legacy_update_parameters_takes_the_runner_iteration(name):
    """``iteration=`` overrides ``steps`` in the gating and the momentum."""
    case = CASES[name]
    net = _net()
    ema = case.make(net)
    a0 = ema.module.fc.weight.detach().double().clone()
    it = next(i for i in range(40, 60) if case.averages(i))
    _perturb(net, 0)
    ema.update_parameters(net, iteration=it)
    assert_near(ema.module.fc.weight, expected(case.kind, a0, net.fc.weight, case.weight(it)))
    skip = next(i for i in range(40, 60) if not case.averages(i))
    w_before = ema.module.fc.weight.detach().clone()
    _perturb(net, 1)
    ema.update_parameters(net, iteration=skip)
    assert torch.equal(ema.module.fc.weight, w_before)
    assert int(ema.steps) == 2


@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'faithful'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_update_parameters_calls_an_overridden_avg_func(name, fast):
    """A subclass's ``avg_func`` is what averages (the fast kernels must step aside)."""
    base = type(CASES[name].make(_net()))

    class Half(base):
        def avg_func(self, averaged_param, source_param, steps):
            averaged_param.mul_(0.5).add_(source_param, alpha=0.5)

    net = _net()
    ema = Half(net, interval=1)
    prev = {k: v.detach().double().clone() for k, v in net.named_parameters()}
    with fast_path(fast):
        for t in range(3):
            _perturb(net, t)
            ema.update_parameters(net)
            src = dict(net.named_parameters())
            first_copy = t == 0 and name not in LEGACY
            for k, p in ema.module.named_parameters():
                want = src[k].detach().double() if first_copy else 0.5 * prev[k] + 0.5 * src[k].double()
                assert_near(p, want)
                prev[k] = p.detach().double().clone()


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_runs_the_averaged_copy(name):
    net = _net().eval()
    ema = CASES[name].make(net).eval()
    _perturb(net, 0)
    ema.update_parameters(net)
    _perturb(net, 1)
    ema.update_parameters(net)
    x = torch.randn(4, 37, generator=torch.Generator().manual_seed(3))
    m = ema.module
    h = x.double() @ m.fc.weight.double().T + m.fc.bias.double()
    h = (h - m.bn.running_mean.double()) / torch.sqrt(m.bn.running_var.double() + m.bn.eps)
    h = h * m.bn.weight.double() + m.bn.bias.double()
    want = h @ m.head.weight.double().T + m.head.bias.double()
    out = ema(x)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out, net(x))   # the averaged copy, not the live model


# ----------------------------------------------------------------------------- momentum rules

@pytest.mark.parametrize('steps', [0, 1, 6, 7, 100])
def test_annealed_momentum(steps):
    ema = MomentumAnnealingEMA(_net(), momentum=M, gamma=GAMMA)
    ema.steps.fill_(steps)
    assert ema.annealed_momentum() == max(M, GAMMA / (GAMMA + steps))


@pytest.mark.parametrize('cls', [MMDet3EMA, MMYoloEMA])
@pytest.mark.parametrize('steps', [0, 1, 6, 100])
def test_current_momentum_and_exp_momentum(cls, steps):
    want = (1 - M) * math.exp(-float(1 + steps) / GAMMA) + M
    assert exp_momentum(M, GAMMA, steps) == want
    assert exp_momentum(M, GAMMA, torch.tensor(steps)) == want
    ema = cls(_net(), momentum=M, gamma=GAMMA)
    assert ema.current_momentum(steps) == want
    assert ema.current_momentum(torch.tensor(steps)) == want


@pytest.mark.parametrize('name', sorted(LEGACY))
def test_momentum_at_and_should_update(name):
    case = CASES[name]
    ema = case.make(_net())
    for it in range(0, 30):
        assert ema.momentum_at(it) == pytest.approx(case.weight(it), rel=1e-15, abs=0), it
        assert ema.should_update(it) is case.averages(it), it


def test_legacy_mmdet_momentum_fun():
    ema = LegacyMMDetEMA(_net(), momentum=M, momentum_fun=lambda it: 1 / (it + 2))
    assert [ema.momentum_at(i) for i in range(3)] == [1 / 2, 1 / 3, 1 / 4]
