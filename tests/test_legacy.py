"""compat_ema.legacy: legacy (mmcv 1.6 / mmdet 2.28) EMA numerics as mmengine averaged models,
checked against independent float64 formulas (docs/runner-behaviour.md#mmcv-emahook,
#mmdet-before-run, #mmdet-update, #mmdet-swap; docs/upstream-quirks.md quirks 1-3, 9)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from compat_ema.legacy import (LegacyEMAHook, LegacyExpMomentumEMA, LegacyLinearMomentumEMA,
                               LegacyMMCVEMA, LegacyMMDetEMA)
from compat_ema.mmengine import EMAHook
from compat_ema.registry import HOOKS, MODELS
from helpers import FakeRunner, TinyModel, ema64, set_params


def _set_all(model, t):
    """Parameters and float buffers get iteration-dependent values; nbt counts iterations."""
    set_params(model, t)
    with torch.no_grad():
        g = torch.Generator().manual_seed(777 + t)
        model.bn.running_mean.copy_(torch.randn(3, generator=g))
        model.bn.num_batches_tracked.fill_(t + 1)


# float64 references: (should_update(it), momentum(it)) written from the upstream formulas
def _mmcv_rule(momentum, interval, warm_up):
    m = momentum ** interval
    return lambda it: (it % interval == 0, min(m, (1 + it) / (warm_up + it)))


def _base_rule(momentum, interval):
    return lambda it: ((it + 1) % interval == 0, momentum)


def _exp_rule(momentum, interval, total_iter):
    return lambda it: ((it + 1) % interval == 0,
                       (1 - momentum) * math.exp(-(1 + it) / total_iter) + momentum)


def _linear_rule(momentum, interval, warm_up):
    return lambda it: ((it + 1) % interval == 0,
                       min(momentum ** interval, (1 + it) / (warm_up + it)))


CASES = [
    ('mmcv-i1', LegacyMMCVEMA, dict(momentum=0.3, interval=1, warm_up=4), _mmcv_rule(0.3, 1, 4)),
    ('mmcv-i3', LegacyMMCVEMA, dict(momentum=0.6, interval=3, warm_up=2), _mmcv_rule(0.6, 3, 2)),
    ('base-i1', LegacyMMDetEMA, dict(momentum=0.25), _base_rule(0.25, 1)),
    ('base-i2', LegacyMMDetEMA, dict(momentum=0.25, interval=2), _base_rule(0.25, 2)),
    ('exp-i1', LegacyExpMomentumEMA, dict(momentum=0.0001, total_iter=5),
     _exp_rule(0.0001, 1, 5)),
    ('exp-i3', LegacyExpMomentumEMA, dict(momentum=0.01, total_iter=4, interval=3),
     _exp_rule(0.01, 3, 4)),
    ('linear-i2', LegacyLinearMomentumEMA, dict(momentum=0.7, warm_up=3, interval=2),
     _linear_rule(0.7, 2, 3)),
]


@pytest.mark.parametrize('name,cls,kwargs,rule', CASES, ids=[c[0] for c in CASES])
def test_trajectory_against_float64(name, cls, kwargs, rule):
    torch.manual_seed(0)
    model = TinyModel()
    init = model.fc.weight.detach().clone()
    avg = cls(model, **kwargs)
    values, momenta = [], []
    for it in range(9):
        _set_all(model, it)
        before = avg.module.fc.weight.detach().clone()
        avg.update_parameters(model)
        update, m = rule(it)
        values.append(model.fc.weight.detach().clone())
        momenta.append(m if update else None)
        if not update:  # gating: untouched, bitwise
            assert torch.equal(avg.module.fc.weight, before), f'{name}: updated at iter {it}'
        assert int(avg.steps) == it + 1
    expected = ema64(values, momenta, init)  # blends from the construction-time clone
    torch.testing.assert_close(avg.module.fc.weight.double(), expected, rtol=1e-5, atol=1e-6)


def test_first_update_blends_with_clone_not_copy():
    model = TinyModel()
    init = model.fc.weight.detach().clone()
    avg = LegacyMMDetEMA(model, momentum=0.5)
    _set_all(model, 0)
    avg.update_parameters(model)
    expected = 0.5 * init.double() + 0.5 * model.fc.weight.detach().double()
    torch.testing.assert_close(avg.module.fc.weight.double(), expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(avg.module.fc.weight, model.fc.weight)


def test_bitwise_equal_to_the_upstream_op_sequence():
    """``ema.mul_(1 - m).add_(p, alpha=m)`` per tensor, in float32, is what the legacy hooks ran."""
    model = TinyModel()
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    avg = LegacyExpMomentumEMA(model, momentum=0.0001, total_iter=7, skip_buffers=True)
    for it in range(5):
        _set_all(model, it)
        avg.update_parameters(model)
        m = (1 - 0.0001) * math.exp(-(1 + it) / 7) + 0.0001
        for k, p in model.named_parameters():
            ref[k].mul_(1 - m).add_(p.detach(), alpha=m)
    for k, v in ref.items():
        assert torch.equal(dict(avg.module.named_parameters())[k], v), k


def test_skip_buffers_false_tracks_state_dict_integers_frozen():
    model = TinyModel()
    init_rm = model.bn.running_mean.clone()
    avg = LegacyMMDetEMA(model, momentum=0.5)
    assert avg.update_buffers is True
    values = []
    for it in range(4):
        _set_all(model, it)
        values.append(model.bn.running_mean.clone())
        avg.update_parameters(model)
    assert int(avg.module.bn.num_batches_tracked) == 0  # never averaged nor copied
    expected = ema64(values, [0.5] * 4, init_rm)
    torch.testing.assert_close(avg.module.bn.running_mean.double(), expected, rtol=1e-6, atol=1e-7)


def test_skip_buffers_true_copies_live_buffers():
    model = TinyModel()
    avg = LegacyMMDetEMA(model, momentum=0.5, skip_buffers=True)
    assert avg.update_buffers is False
    _set_all(model, 3)
    avg.update_parameters(model)
    assert torch.equal(avg.module.bn.running_mean, model.bn.running_mean)
    assert int(avg.module.bn.num_batches_tracked) == 4


def test_mmcv_params_only_and_momentum_power():
    avg = LegacyMMCVEMA(TinyModel(), momentum=0.5, interval=3)
    assert avg.update_buffers is False and avg.momentum == 0.125
    assert list(avg.avg_parameters) == ['fc.weight', 'fc.bias', 'bn.weight', 'bn.bias']
    with pytest.raises(AssertionError, match='parameters only'):
        LegacyMMCVEMA(TinyModel(), update_buffers=True)


def test_explicit_iteration_overrides_steps():
    """After a resume without ema_state_dict steps restarts at 0; the iteration decides."""
    model = TinyModel()
    a = LegacyMMDetEMA(model, momentum=0.5, interval=4)
    _set_all(model, 1)
    before = a.module.fc.weight.clone()
    a.update_parameters(model)  # steps 0 -> (0+1) % 4 != 0: no update
    assert torch.equal(a.module.fc.weight, before)
    a.update_parameters(model, iteration=7)  # (7+1) % 4 == 0: update
    assert not torch.equal(a.module.fc.weight, before)


def test_tied_weights_averaged_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

    model = Tied()
    init = model.a.weight.detach().clone()
    avg = LegacyMMDetEMA(model, momentum=0.5)
    with torch.no_grad():
        model.a.weight.fill_(1.0)
    avg.update_parameters(model)
    torch.testing.assert_close(avg.module.a.weight, 0.5 * init + 0.5)


@pytest.mark.parametrize('kwargs,match', [
    (dict(momentum=0), 'momentum'), (dict(momentum=1.0), 'momentum'),
    (dict(interval=0), 'interval'), (dict(interval=1.5), 'interval'),
    (dict(skip_buffers=True, update_buffers=True), 'contradicts'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(AssertionError, match=match):
        LegacyMMDetEMA(TinyModel(), **kwargs)


def test_registered_in_legacy_scope_and_usable_as_ema_type():
    assert MODELS.get('legacy.LegacyMMCVEMA') is LegacyMMCVEMA
    assert MODELS.get('LegacyExpMomentumEMA', scope='legacy') is LegacyExpMomentumEMA
    assert HOOKS.get('legacy.LegacyEMAHook') is LegacyEMAHook
    model = TinyModel()
    hook = EMAHook(ema_type='legacy.LegacyLinearMomentumEMA', momentum=0.3, warm_up=2)
    runner = FakeRunner(model)
    hook.before_run(runner)
    assert isinstance(hook.ema_model, LegacyLinearMomentumEMA)


def test_mmengine_emahook_drives_legacy_numbers():
    """mmengine EMAHook.after_train_iter calls update_parameters(model): steps == iter."""
    model = TinyModel()
    init = model.fc.weight.detach().clone()
    hook = EMAHook(ema_type='legacy.LegacyMMCVEMA', momentum=0.4, interval=2, warm_up=3)
    runner = FakeRunner(model)
    hook.before_run(runner)
    hook.before_train(runner)
    values, momenta = [], []
    rule = _mmcv_rule(0.4, 2, 3)
    for it in range(6):
        runner.iter = it
        _set_all(model, it)
        hook.after_train_iter(runner, batch_idx=it)
        values.append(model.fc.weight.detach().clone())
        up, m = rule(it)
        momenta.append(m if up else None)
    torch.testing.assert_close(hook.ema_model.module.fc.weight.double(),
                               ema64(values, momenta, init), rtol=1e-5, atol=1e-6)


# -- LegacyEMAHook ---------------------------------------------------------------

def _train(hook, runner, epochs, iters, start_epoch=0):
    for ep in range(start_epoch, epochs):
        runner.epoch = ep
        hook.before_train_epoch(runner)
        for i in range(iters):
            runner.iter = ep * iters + i
            _set_all(runner.model, runner.iter)
            hook.after_train_iter(runner, batch_idx=i)
        hook.after_train_epoch(runner)


def test_legacy_hook_swaps_at_train_epoch_boundaries():
    model = TinyModel()
    init = model.fc.weight.detach().clone()
    hook = LegacyEMAHook(ema_type='LegacyMMDetEMA', momentum=0.5, skip_buffers=True)
    runner = FakeRunner(model)
    hook.before_run(runner)
    values = []
    for ep in range(2):
        runner.epoch = ep
        hook.before_train_epoch(runner)
        for i in range(2):
            runner.iter = ep * 2 + i
            _set_all(model, runner.iter)
            values.append(model.fc.weight.detach().clone())
            hook.after_train_iter(runner, batch_idx=i)
        hook.after_train_epoch(runner)
        assert hook.holds_ema
        # the model now holds the EMA, the averaged copy the raw weights
        expected = ema64(values, [0.5] * len(values), init)
        torch.testing.assert_close(model.fc.weight.double(), expected, rtol=1e-6, atol=1e-7)
        assert torch.equal(hook.ema_model.module.fc.weight, values[-1])
        hook.before_val_epoch(runner)  # no swap around validation
        hook.after_val_epoch(runner)
        assert hook.holds_ema
    hook.before_train_epoch(runner)
    assert torch.equal(model.fc.weight, values[-1]) and not hook.holds_ema


@pytest.mark.parametrize('holds', [True, False])
def test_legacy_hook_checkpoint_layout_is_mmengine(holds):
    model = TinyModel()
    hook = LegacyEMAHook(ema_type='LegacyMMCVEMA', momentum=0.5)
    runner = FakeRunner(model)
    hook.before_run(runner)
    _train(hook, runner, 1, 3)
    if not holds:
        hook.before_train_epoch(runner)
    ema = (model if holds else hook.ema_model.module).fc.weight.clone()
    raw = (hook.ema_model.module if holds else model).fc.weight.clone()
    ckpt = {'state_dict': model.state_dict()}
    hook.before_save_checkpoint(runner, ckpt)
    assert torch.equal(ckpt['state_dict']['fc.weight'], ema)
    assert torch.equal(ckpt['ema_state_dict']['module.fc.weight'], raw)
    assert int(ckpt['ema_state_dict']['steps']) == 3
    assert list(ckpt['ema_state_dict'])[0] == 'steps'


def test_legacy_hook_resume_restores_ema_and_continues():
    torch.manual_seed(1)
    full_model = TinyModel()
    start = {k: v.clone() for k, v in full_model.state_dict().items()}
    full = LegacyEMAHook(ema_type='LegacyExpMomentumEMA', momentum=0.01, total_iter=5)
    r = FakeRunner(full_model)
    full.before_run(r)
    _train(full, r, 2, 3)

    part_model = TinyModel()
    part_model.load_state_dict(start)
    part = LegacyEMAHook(ema_type='LegacyExpMomentumEMA', momentum=0.01, total_iter=5)
    r1 = FakeRunner(part_model)
    part.before_run(r1)
    _train(part, r1, 1, 3)
    ckpt = {'state_dict': {k: v.clone() for k, v in part_model.state_dict().items()}}
    part.before_save_checkpoint(r1, ckpt)
    ckpt = {k: ({kk: vv.clone() for kk, vv in v.items()}) for k, v in ckpt.items()}

    resumed_model = TinyModel()
    hook = LegacyEMAHook(ema_type='LegacyExpMomentumEMA', momentum=0.01, total_iter=5)
    r2 = FakeRunner(resumed_model, resume=True)
    hook.before_run(r2)
    hook.after_load_checkpoint(r2, ckpt)
    resumed_model.load_state_dict(ckpt['state_dict'])
    assert int(hook.ema_model.steps) == 3
    _train(hook, r2, 2, 3, start_epoch=1)
    for k, v in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k
    for k, v in full.ema_model.state_dict().items():
        assert torch.equal(hook.ema_model.state_dict()[k], v), k


@pytest.mark.parametrize('key', ['begin_iter', 'begin_epoch'])
def test_legacy_hook_rejects_delayed_start(key):
    with pytest.raises(AssertionError, match=key):
        LegacyEMAHook(**{key: 2})


def test_legacy_hook_rejects_non_legacy_types():
    hook = LegacyEMAHook(ema_type='mmengine.ExponentialMovingAverage')
    with pytest.raises(AssertionError, match='legacy averaged model'):
        hook.before_run(FakeRunner(TinyModel()))


def test_no_openmmlab_import_outside_integrations():
    """compat_ema.legacy and compat_ema.integrations import no OpenMMLab package; the
    integration modules say what they need when it is missing."""
    import subprocess
    import sys
    code = ('import sys, compat_ema.legacy, compat_ema.integrations\n'
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmengine", "mmdet")]\n'
            'print("BAD", bad)\n'
            'for mod in ("compat_ema.integrations.mmcv", "compat_ema.integrations.mmengine_plugin"):\n'
            '    try:\n'
            '        __import__(mod)\n'
            '    except ImportError as exc:\n'
            '        print("ERR", mod, exc)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'BAD []' in out, out
    try:
        import mmcv  # noqa: F401
    except ImportError:
        assert 'compat_ema.integrations.mmcv needs mmcv 1.x' in out, out
    try:
        import mmengine  # noqa: F401
    except ImportError:
        assert 'compat_ema.integrations.mmengine_plugin needs mmengine' in out, out


@pytest.mark.gpu
@pytest.mark.parametrize('cls,kwargs', [(LegacyMMCVEMA, dict(momentum=0.3, interval=2, warm_up=3)),
                                        (LegacyExpMomentumEMA, dict(momentum=0.01, total_iter=4))])
def test_cuda_matches_cpu_within_policy(cls, kwargs):
    """On CUDA the legacy types follow MIGRATION.md's tolerance policy (16 ULP) against CPU."""
    cpu_model = TinyModel()
    gpu_model = TinyModel().cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    a, b = cls(cpu_model, **kwargs), cls(gpu_model, **kwargs)
    for it in range(8):
        _set_all(cpu_model, it)
        gpu_model.load_state_dict(cpu_model.state_dict())
        a.update_parameters(cpu_model)
        b.update_parameters(gpu_model)
    for k, v in a.module.state_dict().items():
        w = b.module.state_dict()[k].cpu()
        if v.dtype.is_floating_point:
            ulp = torch.finfo(v.dtype).eps * v.abs().clamp_min(1e-30)
            assert ((v - w).abs() <= 16 * ulp + 16 * torch.finfo(v.dtype).eps).all(), k
        else:
            assert torch.equal(v, w), k


def test_legacy_hook_reclones_at_before_train_unless_resumed():
    """mmengine's Runner runs init_weights/load_from after before_run; the legacy clone is taken
    when training starts, so LegacyEMAHook re-takes it in before_train (not after a resume)."""
    model = TinyModel()
    hook = LegacyEMAHook(ema_type='LegacyMMDetEMA', momentum=0.5)
    runner = FakeRunner(model)
    hook.before_run(runner)
    _set_all(model, 40)  # e.g. init_weights() after before_run
    started = {k: v.clone() for k, v in model.state_dict().items()}
    hook.before_train(runner)
    assert all(torch.equal(hook.ema_model.module.state_dict()[k], v) for k, v in started.items())

    resumed = LegacyEMAHook(ema_type='LegacyMMDetEMA', momentum=0.5)
    r2 = FakeRunner(TinyModel(), resume=True)
    resumed.before_run(r2)
    ckpt = {'state_dict': {k: v.clone() for k, v in started.items()}}
    hook.before_save_checkpoint(runner, ckpt)  # state_dict <-> ema_state_dict swapped
    ema_before = {k: v.clone() for k, v in ckpt['state_dict'].items()}
    resumed.after_load_checkpoint(r2, ckpt)
    _set_all(r2.model, 41)
    resumed.before_train(r2)  # restored: keep the EMA from the checkpoint
    for k, v in ema_before.items():
        assert torch.equal(resumed.ema_model.module.state_dict()[k], v), k
