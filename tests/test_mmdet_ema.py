"""mmdet 2.28 EMA hooks' quirks, against independent float64 formulas (docs/upstream-quirks.md
quirks 2-3, 6-9)."""
from __future__ import annotations

import math

import pytest
import torch

from compat_ema.mmdet import BaseEMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook
from compat_ema.mmdet.core.hook import ema as ema_mirror
from compat_ema.registry import HOOKS
from helpers import BN_COUNTS_IN_PLACE, FakeRunner, TinyModel, ema64, set_params


def test_mirror_paths():
    assert ema_mirror.ExpMomentumEMAHook is ExpMomentumEMAHook
    assert ema_mirror.BaseEMAHook is BaseEMAHook


def test_base_is_not_registered_but_exp_and_linear_are():
    assert 'mmdet.ExpMomentumEMAHook' in HOOKS.known_names()
    assert 'mmdet.LinearMomentumEMAHook' in HOOKS.known_names()
    assert not any(n.endswith('.BaseEMAHook') for n in HOOKS.known_names())


def test_defaults():
    h = ExpMomentumEMAHook()
    assert (h.momentum, h.interval, h.skip_buffers, h.checkpoint) == (0.0002, 1, False, None)
    assert h.momentum_fun(0) == (1 - 0.0002) * math.exp(-1 / 2000) + 0.0002


@pytest.mark.parametrize('cls', [BaseEMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook])
@pytest.mark.parametrize('momentum', [0, 1, 1.5, -1e-3])
def test_momentum_range(cls, momentum):
    with pytest.raises(AssertionError, match='momentum'):
        cls(momentum=momentum)


def test_skip_buffers_false_tracks_state_dict_including_integers():
    model = TinyModel()
    BaseEMAHook().before_run(FakeRunner(model))
    ema_keys = [k for k in model.state_dict() if k.startswith('ema_')]
    assert ema_keys == ['ema_fc_weight', 'ema_fc_bias', 'ema_bn_weight', 'ema_bn_bias',
                        'ema_bn_running_mean', 'ema_bn_running_var', 'ema_bn_num_batches_tracked']


def test_skip_buffers_true_tracks_parameters_only():
    model = TinyModel()
    BaseEMAHook(skip_buffers=True).before_run(FakeRunner(model))
    assert [k for k in model.state_dict() if k.startswith('ema_')] == [
        'ema_fc_weight', 'ema_fc_bias', 'ema_bn_weight', 'ema_bn_bias']


def _momentum(kind, momentum, t, interval, total_iter=2000, warm_up=100):
    if kind == 'base':
        return momentum
    if kind == 'exp':
        return (1 - momentum) * math.exp(-(1 + t) / total_iter) + momentum
    return min(momentum ** interval, (1 + t) / (warm_up + t))


@pytest.mark.parametrize('kind, cls, extra', [
    ('base', BaseEMAHook, {}),
    ('exp', ExpMomentumEMAHook, dict(total_iter=5)),
    ('linear', LinearMomentumEMAHook, dict(warm_up=3)),
])
@pytest.mark.parametrize('interval', [1, 3])
def test_update_formula_and_iter_plus_one_gating(kind, cls, extra, interval):
    torch.manual_seed(0)
    model = TinyModel().double()
    runner = FakeRunner(model)
    hook = cls(momentum=0.3, interval=interval, **extra)
    hook.before_run(runner)
    init = model.fc.weight.detach().clone()
    values, momenta, updated_at = [], [], []
    for t in range(9):
        set_params(model, t)
        runner.iter = t
        before = model.ema_fc_weight.clone()
        hook.after_train_iter(runner)
        gate = (t + 1) % interval == 0
        values.append(model.fc.weight.detach().clone())
        momenta.append(_momentum(kind, 0.3, t, interval, total_iter=5, warm_up=3) if gate else None)
        if not torch.equal(before, model.ema_fc_weight):
            updated_at.append(t)
    assert updated_at == [t for t in range(9) if (t + 1) % interval == 0]
    torch.testing.assert_close(model.ema_fc_weight, ema64(values, momenta, init),
                               rtol=1e-12, atol=1e-14)


def test_integer_buffers_swapped_but_never_averaged():
    torch.manual_seed(0)
    model = TinyModel()
    runner = FakeRunner(model)
    hook = BaseEMAHook(momentum=0.5)
    hook.before_run(runner)
    hook.before_train_epoch(runner)           # epoch 0: swaps identical values
    for t in range(3):
        model.train()
        model(torch.randn(4, 4))              # BN counts batches
        runner.iter = t
        hook.after_train_iter(runner)
    assert int(model.bn.num_batches_tracked) == 3
    assert int(model.ema_bn_num_batches_tracked) == 0   # never averaged
    hook.after_train_epoch(runner)
    # docs/runner-behaviour.md#mmdet-swap: (model nbt, ema nbt) == (0, 3) after the epoch-end swap;
    # on torch 1.8-1.10 BatchNorm rebinds its counter, the hook swaps the stale one it tracks
    # and the live one stays (helpers.BN_COUNTS_IN_PLACE; the real mmdet does the same there)
    swapped = (0, 3) if BN_COUNTS_IN_PLACE else (3, 0)
    assert (int(model.bn.num_batches_tracked), int(model.ema_bn_num_batches_tracked)) == swapped
    hook.before_train_epoch(runner)
    assert (int(model.bn.num_batches_tracked), int(model.ema_bn_num_batches_tracked)) == (3, 0)


def test_running_stats_are_averaged_when_not_skipped():
    model = TinyModel().double()
    runner = FakeRunner(model)
    hook = BaseEMAHook(momentum=0.25)
    hook.before_run(runner)
    model.bn.running_mean.fill_(4.0)
    runner.iter = 0
    hook.after_train_iter(runner)
    assert torch.equal(model.ema_bn_running_mean, torch.full((3,), 0.75 * 0 + 0.25 * 4.0,
                                                             dtype=torch.float64))


def test_interval_zero_fails_like_upstream():
    hook = BaseEMAHook(interval=0)  # upstream does not check interval
    runner = FakeRunner(TinyModel())
    hook.before_run(runner)
    with pytest.raises(ZeroDivisionError):
        hook.after_train_iter(runner)


def test_resume_from():
    runner = FakeRunner(TinyModel())
    ExpMomentumEMAHook(resume_from='a.pth').before_run(runner)
    assert runner.resumed == ['a.pth']


def test_tied_weights_tracked_twice_via_state_dict():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(2, 2, bias=False)
            self.b = torch.nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight
    model = Tied()
    BaseEMAHook().before_run(FakeRunner(model))
    assert [k for k in model.state_dict() if k.startswith('ema_')] == ['ema_a_weight', 'ema_b_weight']
