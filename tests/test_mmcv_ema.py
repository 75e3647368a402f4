"""mmcv 1.6 EMAHook quirks, checked against independent float64 formulas (docs/upstream-quirks.md
quirks 1-7)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn

from compat_ema.mmcv import EMAHook
from compat_ema.mmcv.runner.hooks import EMAHook as EMAHookMirror
from helpers import FakeRunner, TinyModel, ema64, set_params


def test_mirror_path_is_the_same_class():
    assert EMAHookMirror is EMAHook


def test_defaults_and_momentum_power():
    h = EMAHook()
    assert (h.warm_up, h.interval, h.checkpoint) == (100, 1, None)
    assert h.momentum == 0.0002
    h4 = EMAHook(momentum=0.0002, interval=4)
    assert h4.momentum == 0.0002 ** 4  # momentum**interval: 1.6e-15 per update
    assert h4.momentum < 2e-15


@pytest.mark.parametrize('kwargs, needle', [
    (dict(momentum=0), 'momentum'), (dict(momentum=1), 'momentum'), (dict(momentum=-0.1), 'momentum'),
    (dict(interval=0), 'interval'), (dict(interval=1.0), 'interval'), (dict(interval=-2), 'interval'),
])
def test_invalid_arguments_raise_assertion_error(kwargs, needle):
    with pytest.raises(AssertionError, match=needle):
        EMAHook(**kwargs)


def test_before_run_registers_param_buffers_only_first_in_state_dict():
    torch.manual_seed(0)
    model = TinyModel()
    runner = FakeRunner(model)
    hook = EMAHook()
    hook.before_run(runner)
    keys = list(model.state_dict())
    assert keys[:4] == ['ema_fc_weight', 'ema_fc_bias', 'ema_bn_weight', 'ema_bn_bias']
    assert 'ema_bn_running_mean' not in keys and 'ema_bn_num_batches_tracked' not in keys
    assert hook.param_ema_buffer == {'fc.weight': 'ema_fc_weight', 'fc.bias': 'ema_fc_bias',
                                     'bn.weight': 'ema_bn_weight', 'bn.bias': 'ema_bn_bias'}
    assert torch.equal(model.ema_fc_weight, model.fc.weight)
    assert model.ema_fc_weight.data_ptr() != model.fc.weight.data_ptr()


def test_resume_from_calls_runner_resume_after_registering():
    runner = FakeRunner(TinyModel())
    EMAHook(resume_from='ckpt.pth').before_run(runner)
    assert runner.resumed == ['ckpt.pth']


@pytest.mark.parametrize('momentum, interval, warm_up', [
    (0.3, 1, 100),    # warm-up bites: (1+t)/(100+t) < 0.3 early
    (0.3, 3, 2),      # momentum**3 = 0.027, warm-up irrelevant
    (0.0002, 1, 100), # mmcv defaults: warm-up never bites
    (0.5, 2, 4),
])
def test_update_formula_and_iter_mod_interval_gating(momentum, interval, warm_up):
    torch.manual_seed(0)
    model = TinyModel().double()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=momentum, interval=interval, warm_up=warm_up)
    hook.before_run(runner)
    init = model.fc.weight.detach().clone()
    values, momenta = [], []
    for t in range(10):
        set_params(model, t)
        runner.iter = t
        before = model.ema_fc_weight.clone()
        hook.after_train_iter(runner)
        m = min(momentum ** interval, (1 + t) / (warm_up + t))
        updated = t % interval == 0
        values.append(model.fc.weight.detach().clone())
        momenta.append(m if updated else None)
        if not updated:
            assert torch.equal(model.ema_fc_weight, before)
    expected = ema64(values, momenta, init)
    torch.testing.assert_close(model.ema_fc_weight, expected, rtol=1e-12, atol=1e-14)


def test_warm_up_has_no_effect_at_defaults():
    hook = EMAHook()
    assert all(hook.effective_momentum(t) == 0.0002 for t in range(0, 10000, 7))


def test_warm_up_bites_only_when_momentum_exceeds_about_one_over_warm_up():
    hook = EMAHook(momentum=0.5, warm_up=100)
    assert hook.effective_momentum(0) == pytest.approx(1 / 100)
    assert hook.effective_momentum(98) == pytest.approx(99 / 198)
    assert hook.effective_momentum(200) == 0.5


def test_swap_exchanges_params_only_and_leaves_bn_stats():
    torch.manual_seed(0)
    model = TinyModel()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    set_params(model, 3)
    model.bn.running_mean.fill_(7)
    model.bn.num_batches_tracked.fill_(5)
    runner.iter = 0
    hook.after_train_iter(runner)
    raw = model.fc.weight.detach().clone()
    ema = model.ema_fc_weight.clone()
    hook.after_train_epoch(runner)
    assert torch.equal(model.fc.weight, ema) and torch.equal(model.ema_fc_weight, raw)
    assert int(model.bn.num_batches_tracked) == 5 and float(model.bn.running_mean[0]) == 7
    hook.before_train_epoch(runner)
    assert torch.equal(model.fc.weight, raw) and torch.equal(model.ema_fc_weight, ema)


def test_no_warnings_during_use():
    model = TinyModel()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        hook.before_run(runner)
        for t in range(3):
            runner.iter = t
            hook.after_train_iter(runner)
        hook.after_train_epoch(runner)


def test_data_parallel_is_unwrapped():
    model = TinyModel()
    runner = FakeRunner(nn.DataParallel(model))
    EMAHook().before_run(runner)
    assert hasattr(model, 'ema_fc_weight')


def test_plain_module_with_module_attribute_is_not_unwrapped():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = TinyModel()
    holder = Holder()
    EMAHook().before_run(FakeRunner(holder))
    assert hasattr(holder, 'ema_module_fc_weight')


def test_tied_and_frozen_parameters():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight
            self.c = nn.Linear(3, 1)
            self.c.bias.requires_grad_(False)
    model = Tied()
    EMAHook().before_run(FakeRunner(model))
    # named_parameters removes duplicates: the tied weight is tracked once; frozen ones are tracked
    assert [k for k in model.state_dict() if k.startswith('ema_')] == [
        'ema_a_weight', 'ema_c_weight', 'ema_c_bias']
