"""compat_ema.mmdet3 / compat_ema.mmyolo ``ExpMomentumEMA``: formulas, quirks, registry names.

Expected values come from independent float64 formulas (``(1-m)*exp(-(1+steps)/gamma)+m``
averaging) or from upstream's documented behaviour; the bitwise agreement with the real
mmdet 3.3.0 / mmyolo 0.6.0 classes is tests/oracle/test_native_diff.py's job.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from compat_ema.mmdet3 import ExpMomentumEMA as MMDet3EMA
from compat_ema.mmdet3 import exp_momentum
from compat_ema.mmdet3.models.layers.ema import ExpMomentumEMA as MMDet3MirrorPath
from compat_ema.mmengine.hooks import EMAHook
from compat_ema.mmengine.model import ExponentialMovingAverage
from compat_ema.mmyolo import ExpMomentumEMA as MMYOLOEMA
from compat_ema.mmyolo.models.layers.ema import ExpMomentumEMA as MMYOLOMirrorPath
from compat_ema.registry import MODELS
from helpers import fast_path


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return Tiny().to(dtype)


def _set(model, t):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            g = torch.Generator().manual_seed(100 * t + i)
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
        model.bn.running_mean.fill_(float(t))
        model.bn.num_batches_tracked.fill_(t)


def _m(momentum, gamma, steps):
    return (1 - momentum) * math.exp(-(1 + steps) / gamma) + momentum


def test_mirror_paths_and_class_tree():
    assert MMDet3EMA is MMDet3MirrorPath and MMYOLOEMA is MMYOLOMirrorPath
    assert issubclass(MMDet3EMA, ExponentialMovingAverage)
    assert issubclass(MMYOLOEMA, MMDet3EMA)  # as upstream: mmyolo subclasses mmdet's


def test_registry_names():
    assert MODELS.get('mmdet3.ExpMomentumEMA') is MMDet3EMA
    assert MODELS.get('mmyolo.ExpMomentumEMA') is MMYOLOEMA
    assert MODELS.get('MMDet3ExpMomentumEMA', scope='mmengine') is MMDet3EMA
    assert MODELS.get('MMYOLOExpMomentumEMA', scope='mmengine') is MMYOLOEMA
    assert MODELS.get('ExpMomentumEMA', scope='mmdet3') is MMDet3EMA
    assert MODELS.get('ExpMomentumEMA', scope='mmyolo') is MMYOLOEMA
    with pytest.raises(KeyError, match='ambiguous'):
        MODELS.get('ExpMomentumEMA')  # two different classes: write it scoped


@pytest.mark.parametrize('ema_type,cls', [('mmdet3.ExpMomentumEMA', MMDet3EMA),
                                          ('MMDet3ExpMomentumEMA', MMDet3EMA),
                                          ('mmyolo.ExpMomentumEMA', MMYOLOEMA),
                                          ('MMYOLOExpMomentumEMA', MMYOLOEMA)])
def test_emahook_builds_by_name(ema_type, cls):
    from compat_ema.core.runner import SimpleRunner
    hook = EMAHook(ema_type=ema_type, momentum=0.0001, update_buffers=True)
    hook.before_run(SimpleRunner(_model(), max_iters=10))
    assert type(hook.ema_model) is cls
    assert (hook.ema_model.momentum, hook.ema_model.gamma) == (0.0001, 2000)


def test_exp_momentum_formula():
    for steps in (0, 1, 7, 1999, 10**6):
        assert exp_momentum(2e-4, 2000, steps) == _m(2e-4, 2000, steps)
        assert exp_momentum(2e-4, 2000, torch.tensor(steps)) == _m(2e-4, 2000, steps)


@pytest.mark.parametrize('cls', [MMDet3EMA, MMYOLOEMA])
def test_trajectory_against_float64(cls):
    """First call copies; then m(steps) with steps = prior calls; interval counts calls."""
    model = _model()
    ema = cls(model, momentum=0.05, gamma=4, interval=2)
    expect = None
    for t in range(7):
        _set(model, t)
        ema.update_parameters(model)
        w = model.fc.weight.detach().clone()
        if t == 0:
            expect = w.clone()
        elif t % 2 == 0:
            m = _m(0.05, 4, t)
            expect = (1 - m) * expect + m * w
        assert torch.allclose(ema.module.fc.weight, expect, rtol=0, atol=1e-14), t
        assert int(ema.steps) == t + 1


def test_mmdet3_uses_mul_add_and_mmyolo_lerp():
    """float32: mmdet 3.x rounds like mul_(1-m).add_(alpha=m), mmyolo like lerp_."""
    torch.manual_seed(1)
    model = nn.Linear(64, 64)
    a, b = MMDet3EMA(model, momentum=0.3, gamma=1), MMYOLOEMA(model, momentum=0.3, gamma=1)
    a.update_parameters(model)
    b.update_parameters(model)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(torch.randn(64, 64))
    a.update_parameters(model)
    b.update_parameters(model)
    m = _m(0.3, 1, 1)
    want_mul = start.clone().mul_(1 - m).add_(model.weight.detach(), alpha=m)
    want_lerp = start.clone().lerp_(model.weight.detach(), m)
    assert torch.equal(a.module.weight, want_mul)
    assert torch.equal(b.module.weight, want_lerp)
    assert not torch.equal(want_mul, want_lerp)  # the two roundings do differ here


def test_buffers_update_buffers_false():
    """mmdet 3.x syncs buffers on every call; mmyolo's spent generator syncs them once."""
    model = _model()
    a, b = MMDet3EMA(model), MMYOLOEMA(model)
    for t in range(1, 4):
        _set(model, t)
        a.update_parameters(model)
        b.update_parameters(model)
    assert float(a.module.bn.running_mean[0]) == 3.0 and int(a.module.bn.num_batches_tracked) == 3
    assert float(b.module.bn.running_mean[0]) == 1.0 and int(b.module.bn.num_batches_tracked) == 1


def test_update_buffers_true_averages_float_buffers_freezes_ints():
    model = _model()
    for cls in (MMDet3EMA, MMYOLOEMA):
        _set(model, 1)
        ema = cls(model, momentum=0.1, gamma=2, update_buffers=True)
        ema.update_parameters(model)
        _set(model, 5)
        ema.update_parameters(model)
        m = _m(0.1, 2, 1)
        assert float(ema.module.bn.running_mean[0]) == pytest.approx((1 - m) * 1 + m * 5, abs=1e-14)
        assert int(ema.module.bn.num_batches_tracked) == 1


def test_mmyolo_ignores_the_model_argument():
    model, other = _model(), _model()
    _set(other, 9)
    a, b = MMDet3EMA(model), MMYOLOEMA(model)
    a.update_parameters(other)
    b.update_parameters(other)
    assert torch.equal(a.module.fc.weight, other.fc.weight)
    assert torch.equal(b.module.fc.weight, model.fc.weight)
    assert not torch.equal(model.fc.weight, other.fc.weight)


def test_mmyolo_deepcopy_fails_like_upstream():
    with pytest.raises(TypeError):
        copy.deepcopy(MMYOLOEMA(_model()))
    copy.deepcopy(MMYOLOEMA(_model(), update_buffers=True))
    copy.deepcopy(MMDet3EMA(_model()))


@pytest.mark.parametrize('cls', [MMDet3EMA, MMYOLOEMA])
@pytest.mark.parametrize('kw,match', [(dict(gamma=0), 'gamma'), (dict(gamma=-3), 'gamma'),
                                      (dict(momentum=0), 'momentum'),
                                      (dict(momentum=1), 'momentum')])
def test_bad_arguments_raise_naming_them(cls, kw, match):
    with pytest.raises(AssertionError, match=match):
        cls(_model(), **kw)


@pytest.mark.parametrize('cls', [MMDet3EMA, MMYOLOEMA])
def test_fast_and_faithful_kernels_agree(cls):
    results = []
    for fast in (True, False):
        with fast_path(fast):
            model = _model(torch.float32)
            ema = cls(model, momentum=0.01, gamma=5, update_buffers=True)
            for t in range(6):
                _set(model, t)
                ema.update_parameters(model)
            results.append({k: v.clone() for k, v in ema.state_dict().items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_subclass_overriding_avg_func_is_used():
    calls = []

    class Mine(MMDet3EMA):
        def avg_func(self, averaged_param, source_param, steps):
            calls.append(int(steps))
            averaged_param.copy_(source_param)

    model = _model()
    ema = Mine(model)
    for t in range(3):
        _set(model, t)
        ema.update_parameters(model)
    assert calls and set(calls) == {1, 2}
    assert torch.equal(ema.module.fc.weight, model.fc.weight)


@pytest.mark.parametrize('scope,cls', [('mmdet3', MMDet3EMA), ('mmyolo', MMYOLOEMA)])
def test_unscoped_ema_type_resolves_in_the_default_scope(scope, cls):
    """mmdet 3.x configs write ema_type='ExpMomentumEMA' with default_scope='mmdet'."""
    from compat_ema.core.runner import SimpleRunner
    from compat_ema.registry import default_scope
    hook = EMAHook(ema_type='ExpMomentumEMA', momentum=0.0001, update_buffers=True)
    with default_scope(scope):
        hook.before_run(SimpleRunner(_model(), max_iters=10))
        assert type(hook.ema_model) is cls
        plain = EMAHook()  # mmengine's own names still resolve through the parent scope
        plain.before_run(SimpleRunner(_model(), max_iters=10))
        assert type(plain.ema_model) is ExponentialMovingAverage
    with default_scope('mmcv'):  # not an mmengine-family scope: mmengine's names as before
        plain.before_run(SimpleRunner(_model(), max_iters=10))
        assert type(plain.ema_model) is ExponentialMovingAverage
    with pytest.raises(KeyError):
        hook.before_run(SimpleRunner(_model(), max_iters=10))  # no default scope: ambiguous
