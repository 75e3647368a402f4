"""Every public method of the averaged models against the REAL upstream classes, bit for bit.

mmengine 0.10.7 ``ExponentialMovingAverage``, ``MomentumAnnealingEMA``,
``StochasticWeightAverage``; mmdet 3.3.0 and mmyolo 0.6.0 ``ExpMomentumEMA`` (executed from
their wheels, :mod:`native`): ``avg_func`` called directly on the same tensors,
``update_parameters`` over a seeded run (fast and faithful), ``forward``. The legacy-numerics
models have no upstream class: their ``avg_func`` at an iteration is checked against one
``after_train_iter`` of the real mmcv 1.6 / mmdet 2.28 hook at that iteration.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import native  # noqa: E402
import upstream  # noqa: E402
from test_averaged_models_api import _net, _perturb  # noqa: E402

from compat_ema import legacy  # noqa: E402
from compat_ema.core import kernels  # noqa: E402
from compat_ema.mmdet3 import ExpMomentumEMA as MMDet3EMA  # noqa: E402
from compat_ema.mmengine import model as compat_model  # noqa: E402
from compat_ema.mmyolo.models.layers.ema import ExpMomentumEMA as MMYoloEMA  # noqa: E402

KW = {
    'ExponentialMovingAverage': dict(momentum=0.1, interval=2),
    'MomentumAnnealingEMA': dict(momentum=0.01, gamma=7, interval=2),
    'StochasticWeightAverage': dict(interval=2),
    'mmdet3': dict(momentum=0.01, gamma=7, interval=2),
    'mmyolo': dict(momentum=0.01, gamma=7, interval=2),
}


def _classes(name):
    if name == 'mmdet3':
        return native.mmdet3_cls(), MMDet3EMA
    if name == 'mmyolo':
        return native.mmyolo_cls(), MMYoloEMA
    _, up_model = upstream.mmengine_mods()
    return getattr(up_model, name), getattr(compat_model, name)


def _pair(name, update_buffers=False):
    up_cls, compat_cls = _classes(name)
    up_net, compat_net = _net(), _net()
    return (up_net, up_cls(up_net, update_buffers=update_buffers, **KW[name]),
            compat_net, compat_cls(compat_net, update_buffers=update_buffers, **KW[name]))


@pytest.mark.parametrize('steps', [1, 2, 5, 40])
@pytest.mark.parametrize('name', list(KW))
def test_avg_func_bitwise(name, steps):
    _, up, _, compat = _pair(name)
    up.steps.fill_(steps)
    compat.steps.fill_(steps)
    g = torch.Generator().manual_seed(steps)
    a, s = torch.randn(1031, generator=g), torch.randn(1031, generator=g)
    a_up, a_compat = a.clone(), a.clone()
    up.avg_func(a_up, s, up.steps)
    compat.avg_func(a_compat, s, compat.steps)
    assert not torch.equal(a_up, a)
    assert torch.equal(a_up.view(torch.int32), a_compat.view(torch.int32))


@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'faithful'])
@pytest.mark.parametrize('update_buffers', [False, True])
@pytest.mark.parametrize('name', list(KW))
def test_update_parameters_and_forward_bitwise(name, update_buffers, fast):
    up_net, up, compat_net, compat = _pair(name, update_buffers)
    before = kernels.fast_path_enabled()
    kernels.set_fast_path(fast)
    try:
        for t in range(7):
            _perturb(up_net, t)
            _perturb(compat_net, t)
            up.update_parameters(up_net)
            compat.update_parameters(compat_net)
            assert int(up.steps) == int(compat.steps)
            a, b = up.module.state_dict(), compat.module.state_dict()
            assert list(a) == list(b)
            for k in a:
                assert torch.equal(a[k], b[k]), (t, k)
    finally:
        kernels.set_fast_path(before)
    x = torch.randn(4, 37, generator=torch.Generator().manual_seed(5))
    up.eval()
    compat.eval()
    assert torch.equal(up(x), compat(x))


class _Runner:
    def __init__(self, model):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.max_iters = 10**6
        self._resume = False


LEGACY = {
    'mmcv': (lambda R, D: R.EMAHook(momentum=0.3, interval=2, warm_up=5),
             lambda net: legacy.LegacyMMCVEMA(net, momentum=0.3, interval=2, warm_up=5)),
    'mmdet-base': (lambda R, D: D.BaseEMAHook(momentum=0.3, interval=2, skip_buffers=True),
                   lambda net: legacy.LegacyMMDetEMA(net, momentum=0.3, interval=2, skip_buffers=True)),
    'mmdet-exp': (lambda R, D: D.ExpMomentumEMAHook(momentum=0.01, total_iter=5, skip_buffers=True),
                  lambda net: legacy.LegacyExpMomentumEMA(net, momentum=0.01, total_iter=5,
                                                          skip_buffers=True)),
    'mmdet-linear': (lambda R, D: D.LinearMomentumEMAHook(momentum=0.3, warm_up=5, skip_buffers=True),
                     lambda net: legacy.LegacyLinearMomentumEMA(net, momentum=0.3, warm_up=5,
                                                                skip_buffers=True)),
}


@pytest.mark.parametrize('it', [0, 1, 3, 8])
@pytest.mark.parametrize('name', list(LEGACY))
def test_legacy_avg_func_is_one_real_hook_update(name, it):
    make_hook, make_compat = LEGACY[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        hook = make_hook(upstream.mmcv_hooks(), upstream.mmdet_ema())
    net = nn.Linear(7, 3)
    runner = _Runner(net)
    hook.before_run(runner)
    compat = make_compat(nn.Linear(7, 3))
    gate = compat.should_update(it)
    g = torch.Generator().manual_seed(it)
    a, s = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    with torch.no_grad():
        net.weight.copy_(s)
        ema_name = 'ema_weight' if name == 'mmcv' else hook.param_ema_buffer['weight']
        ema_buf = dict(net.named_buffers())[ema_name]
        ema_buf.copy_(a)
    runner.iter = it
    hook.after_train_iter(runner)
    got = a.clone()
    if gate:
        compat.avg_func(got, s, torch.tensor(it))
    assert torch.equal(ema_buf, got), (it, gate)
