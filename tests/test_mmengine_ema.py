"""mmengine 0.10.7 EMAHook and averaged models: quirks against float64 formulas
(docs/upstream-quirks.md quirks 3, 11-16; docs/runner-behaviour.md#mmengine-emahook)."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn as nn

from compat_ema.mmengine import (BaseAveragedModel, EMAHook, ExponentialMovingAverage,
                                 MomentumAnnealingEMA, StochasticWeightAverage)
from compat_ema.mmengine.hooks import EMAHook as EMAHookMirror
from compat_ema.mmengine.model import ExponentialMovingAverage as EMAMirror
from compat_ema.registry import MODELS
from helpers import FakeRunner, TinyModel, ema64, set_params


def test_mirror_paths():
    assert EMAHookMirror is EMAHook and EMAMirror is ExponentialMovingAverage


def test_averaged_model_structure():
    model = TinyModel()
    ema = ExponentialMovingAverage(model)
    assert ema.momentum == 0.0002 and ema.interval == 1 and ema.update_buffers is False
    assert ema.steps.dtype == torch.long and int(ema.steps) == 0
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert list(ema.state_dict())[0] == 'steps'
    assert list(ema.avg_parameters) == ['fc.weight', 'fc.bias', 'bn.weight', 'bn.bias']
    ub = ExponentialMovingAverage(model, update_buffers=True)
    assert list(ub.avg_parameters) == list(model.state_dict())


@pytest.mark.parametrize('momentum', [0, 1, -0.5, 2])
def test_momentum_range(momentum):
    with pytest.raises(AssertionError, match='momentum'):
        ExponentialMovingAverage(TinyModel(), momentum=momentum)


def test_large_momentum_warns(caplog):
    with caplog.at_level(logging.WARNING, logger='compat_ema'):
        ExponentialMovingAverage(TinyModel(), momentum=0.9)
    assert 'usually a small number' in caplog.text


def test_gamma_must_be_positive():
    with pytest.raises(AssertionError, match='gamma'):
        MomentumAnnealingEMA(TinyModel(), gamma=0)


def _drive(avg, model, n):
    values = []
    for t in range(n):
        set_params(model, t)
        values.append(model.fc.weight.detach().clone())
        avg.update_parameters(model)
    return values


@pytest.mark.parametrize('interval', [1, 3])
def test_ema_first_update_copies_then_lerps_every_interval_calls(interval):
    model = TinyModel().double()
    avg = ExponentialMovingAverage(model, momentum=0.3, interval=interval)
    values = _drive(avg, model, 8)
    momenta = [1.0] + [0.3 if s % interval == 0 else None for s in range(1, 8)]
    torch.testing.assert_close(avg.module.fc.weight, ema64(values, momenta, values[0] * 0),
                               rtol=1e-12, atol=1e-14)
    assert int(avg.steps) == 8


def test_momentum_annealing_formula():
    model = TinyModel().double()
    avg = MomentumAnnealingEMA(model, momentum=0.01, gamma=3)
    values = _drive(avg, model, 8)
    momenta = [1.0] + [max(0.01, 3 / (3 + s)) for s in range(1, 8)]
    torch.testing.assert_close(avg.module.fc.weight, ema64(values, momenta, values[0] * 0),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('interval', [1, 2])
def test_swa_formula(interval):
    model = TinyModel().double()
    avg = StochasticWeightAverage(model, interval=interval)
    values = _drive(avg, model, 7)
    e = values[0].clone()
    for s in range(1, 7):
        if s % interval == 0:
            e = e + (values[s] - e) * (1 / float(s // interval + 1))
    torch.testing.assert_close(avg.module.fc.weight, e, rtol=1e-12, atol=1e-14)


def test_buffers_copied_when_not_updated_and_int_frozen_when_updated():
    model = TinyModel()
    plain = ExponentialMovingAverage(model, momentum=0.5)
    both = ExponentialMovingAverage(model, momentum=0.5, update_buffers=True)
    for t in range(3):
        model.train()
        model(torch.randn(5, 4))
        plain.update_parameters(model)
        both.update_parameters(model)
    assert int(plain.module.bn.num_batches_tracked) == 3
    assert torch.equal(plain.module.bn.running_mean, model.bn.running_mean)
    assert int(both.module.bn.num_batches_tracked) == 1   # frozen at the first copy
    assert not torch.equal(both.module.bn.running_mean, model.bn.running_mean)


def test_user_avg_func_subclass_is_honoured():
    class Half(BaseAveragedModel):
        def avg_func(self, averaged_param, source_param, steps):
            averaged_param.mul_(0.5).add_(source_param, alpha=0.5)
    MODELS.register_module(scope='mmengine', module=Half, force=True)
    model = TinyModel().double()
    hook = EMAHook(ema_type='Half')
    runner = FakeRunner(model)
    hook.before_run(runner)
    values = []
    for t in range(3):
        set_params(model, t)
        values.append(model.fc.weight.detach().clone())
        runner.iter = t
        hook.after_train_iter(runner, batch_idx=t)
    assert isinstance(hook.ema_model, Half)
    torch.testing.assert_close(hook.ema_model.module.fc.weight,
                               ema64(values, [1.0, 0.5, 0.5], values[0] * 0))


def test_hook_argument_checks():
    with pytest.raises(AssertionError, match='begin_iter'):
        EMAHook(begin_iter=2, begin_epoch=1)
    with pytest.raises(AssertionError, match='begin_iter'):
        EMAHook(begin_iter=-1)
    with pytest.raises(AssertionError, match='begin_epoch'):
        EMAHook(begin_epoch=-1)
    hook = EMAHook(begin_iter=5)
    runner = FakeRunner(TinyModel(), max_iters=4)
    hook.before_run(runner)
    with pytest.raises(AssertionError, match='max_iters'):
        hook.before_train(runner)
    hook = EMAHook(begin_epoch=3)
    runner = FakeRunner(TinyModel(), max_epochs=2)
    hook.before_run(runner)
    with pytest.raises(AssertionError, match='max_epochs'):
        hook.before_train(runner)


def test_default_ema_type_and_priority():
    hook = EMAHook(momentum=0.1)
    assert hook.ema_cfg == dict(type='ExponentialMovingAverage', momentum=0.1)
    assert hook.priority == 'NORMAL' and hook.strict_load is False


@pytest.mark.parametrize('begin_iter, expected_steps', [(0, 6), (1, 6), (3, 4)])
def test_begin_iter(begin_iter, expected_steps):
    model = TinyModel().double()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=0.5, begin_iter=begin_iter)
    hook.before_run(runner)
    values, momenta = [], []
    for t in range(6):
        set_params(model, t)
        values.append(model.fc.weight.detach().clone())
        runner.iter = t
        hook.after_train_iter(runner, batch_idx=t)
        started = t + 1 >= begin_iter
        first = started and (t == 0 or t + 1 == begin_iter)
        momenta.append(1.0 if (not started or first) else 0.5)
    assert int(hook.ema_model.steps) == expected_steps
    torch.testing.assert_close(hook.ema_model.module.fc.weight,
                               ema64(values, momenta, values[0] * 0), rtol=1e-12, atol=1e-14)


def test_begin_epoch_one_behaves_like_zero_and_two_waits():
    for begin_epoch, steps_after in [(1, 9), (2, 6)]:
        runner = FakeRunner(TinyModel())
        hook = EMAHook(begin_epoch=begin_epoch)
        hook.before_run(runner)
        for t in range(9):
            runner.iter, runner.epoch = t, t // 3
            hook.after_train_iter(runner, batch_idx=t)
        assert int(hook.ema_model.steps) == steps_after


def test_swaps_only_around_val_and_test():
    model = TinyModel()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    for t in range(2):
        set_params(model, t)
        runner.iter = t
        hook.after_train_iter(runner, batch_idx=t)
    raw = model.fc.weight.detach().clone()
    ema = hook.ema_model.module.fc.weight.detach().clone()
    hook.after_train_epoch(runner)          # no swap at train-epoch boundaries
    assert torch.equal(model.fc.weight, raw)
    for before, after in [(hook.before_val_epoch, hook.after_val_epoch),
                          (hook.before_test_epoch, hook.after_test_epoch)]:
        before(runner)
        assert torch.equal(model.fc.weight, ema) and torch.equal(hook.ema_model.module.fc.weight, raw)
        after(runner)
        assert torch.equal(model.fc.weight, raw)


def _trained_hook(update_buffers=False):
    model = TinyModel()
    runner = FakeRunner(model)
    hook = EMAHook(momentum=0.5, update_buffers=update_buffers)
    hook.before_run(runner)
    for t in range(3):
        set_params(model, t)
        runner.iter = t
        hook.after_train_iter(runner, batch_idx=t)
    return model, runner, hook


def test_before_save_checkpoint_swaps_dict_values():
    model, runner, hook = _trained_hook()
    ckpt = {'meta': {}, 'state_dict': model.state_dict()}
    hook.before_save_checkpoint(runner, checkpoint=ckpt)
    assert list(ckpt) == ['meta', 'state_dict', 'ema_state_dict']
    esd = ckpt['ema_state_dict']
    assert list(esd)[0] == 'steps' and int(esd['steps']) == 3
    assert [k for k in esd if k != 'steps'] == ['module.' + k for k in model.state_dict()]
    assert torch.equal(ckpt['state_dict']['fc.weight'], hook.ema_model.module.fc.weight)
    assert torch.equal(esd['module.fc.weight'], model.fc.weight)
    # values are swapped in the dicts, tensors untouched (they alias the live models)
    assert esd['module.fc.weight'].data_ptr() == model.fc.weight.data_ptr()


def test_after_load_checkpoint_resume_branch_restores_ema_and_raw():
    model, runner, hook = _trained_hook()
    ckpt = {'state_dict': copy.deepcopy(model.state_dict())}
    hook.before_save_checkpoint(runner, checkpoint=ckpt)
    ckpt = copy.deepcopy(ckpt)
    raw, ema = model.fc.weight.detach().clone(), hook.ema_model.module.fc.weight.detach().clone()
    fresh = TinyModel()
    r2 = FakeRunner(fresh, resume=True)
    h2 = EMAHook(momentum=0.5)
    h2.before_run(r2)
    h2.after_load_checkpoint(r2, checkpoint=ckpt)
    assert torch.equal(h2.ema_model.module.fc.weight, ema) and int(h2.ema_model.steps) == 3
    assert torch.equal(ckpt['state_dict']['fc.weight'], raw)   # the model will load raw


def test_after_load_checkpoint_load_branch_copies_state_dict(caplog):
    model, runner, hook = _trained_hook()
    ckpt = {'state_dict': copy.deepcopy(model.state_dict())}
    hook.before_save_checkpoint(runner, checkpoint=ckpt)
    ckpt = copy.deepcopy(ckpt)
    ema = hook.ema_model.module.fc.weight.detach().clone()
    r2 = FakeRunner(TinyModel(), resume=False)
    h2 = EMAHook(momentum=0.5)
    h2.before_run(r2)
    h2.after_load_checkpoint(r2, checkpoint=ckpt)
    assert torch.equal(h2.ema_model.module.fc.weight, ema) and int(h2.ema_model.steps) == 0
    assert torch.equal(ckpt['state_dict']['fc.weight'], ema)   # the model gets EMA weights too
    # resuming a checkpoint without ema_state_dict warns and copies
    r3 = FakeRunner(TinyModel(), resume=True)
    h3 = EMAHook()
    h3.before_run(r3)
    with caplog.at_level(logging.WARNING, logger='compat_ema'):
        h3.after_load_checkpoint(r3, checkpoint={'state_dict': copy.deepcopy(model.state_dict())})
    assert 'There is no `ema_state_dict`' in caplog.text


def test_strict_load_raises_on_mismatch():
    r = FakeRunner(TinyModel(), resume=False)
    h = EMAHook(strict_load=True)
    h.before_run(r)
    sd = TinyModel().state_dict()
    sd['extra'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='unexpected key'):
        h.after_load_checkpoint(r, checkpoint={'state_dict': sd})
    del sd['extra'], sd['bn.num_batches_tracked']   # missing num_batches_tracked is ignored
    h.after_load_checkpoint(r, checkpoint={'state_dict': sd})


def test_update_buffers_swap_includes_buffers():
    model, runner, hook = _trained_hook(update_buffers=True)
    model.bn.num_batches_tracked.fill_(6)
    hook.before_val_epoch(runner)
    # docs/runner-behaviour.md#mmengine-emahook: during val the model shows the frozen EMA count
    # (the first copy: 0 here)
    assert int(model.bn.num_batches_tracked) == 0
    assert int(hook.ema_model.module.bn.num_batches_tracked) == 6
    hook.after_val_epoch(runner)
    assert int(model.bn.num_batches_tracked) == 6


def test_rebuild_on_every_before_run():
    model, runner, hook = _trained_hook()
    hook.before_run(runner)
    assert int(hook.ema_model.steps) == 0
    assert torch.equal(hook.ema_model.module.fc.weight, model.fc.weight)
