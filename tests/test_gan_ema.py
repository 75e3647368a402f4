"""mmedit 0.16.1 / mmagic 1.2.0 ``ExponentialMovingAverageHook``: quirks, checks, and runs in the
harness runners (bit-for-bit fidelity to the real files is in test_gan_golden.py and, live, in
tests/oracle/test_gan_diff.py and test_gan_runners.py)."""
from __future__ import annotations

import copy
import subprocess
import sys
import types
import warnings

import pytest
import torch
import torch.nn as nn

from compat_ema.core.module_ema import gate
from compat_ema.legacy import LegacyExponentialMovingAverageHook
from compat_ema.mmagic import ExponentialMovingAverageHook as MMagicHook
from compat_ema.mmedit import ExponentialMovingAverageHook as MMEditHook
from compat_ema.registry import HOOKS
from compat_ema.testing.gan import TinyRestorer, generator_parameters
from compat_ema.testing.mmcv_runner import IterBasedRunner, MMDataParallel
from compat_ema.testing.mmengine_runner import Runner
from compat_ema.testing.models import ListLoader, make_loader


def test_gate_table():
    # before start_iter: always; then (iter + 1 - start) % n == 0; n <= 0: never
    assert [gate(i, 3, 2) for i in range(9)] == [True, True, True, False, True, False, True,
                                                 False, True]
    assert [gate(i, 0, -1) for i in range(4)] == [False] * 4
    assert [gate(i, 2, 0) for i in range(4)] == [True, True, False, False]
    assert [gate(i, 0, 3) for i in range(6)] == [False, False, True, False, False, True]


@pytest.mark.parametrize('cls', [MMEditHook, MMagicHook])
def test_argument_checks_raise_assertion_error(cls):
    cls(module_keys=('generator_ema'))   # a str in parentheses, as mmedit's Real-ESRGAN configs
    cls(module_keys=('generator_ema', 'disc_ema'))
    for bad in (['generator_ema'], 'generator', ('a_ema', 1), 5):
        with pytest.raises(AssertionError):
            cls(module_keys=bad)
    with pytest.raises(AssertionError, match='do not support cubic'):
        cls(module_keys='generator_ema', interp_mode='cubic')


def test_checks_survive_python_O():
    code = ('from compat_ema.mmagic import ExponentialMovingAverageHook as H\n'
            'import torch\n'
            'for kw in (dict(momentum=0.), dict(momentum_nontrainable=0.)):\n'
            '    try:\n'
            '        H.lerp(torch.ones(1), torch.zeros(1), **kw)\n'
            '    except AssertionError as e:\n'
            '        print("raised", e)\n'
            'try:\n'
            '    H(module_keys=["generator_ema"])\n'
            'except AssertionError:\n'
            '    print("raised keys")\n')
    out = subprocess.run([sys.executable, '-O', '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.count('raised') == 3 and 'momentum must be in range (0.0, 1.0)' in out


def test_lerp_directions_and_warning():
    a, b = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    # mmedit: weight of the OLD ema; mmagic: weight of the NEW weights
    assert MMEditHook.lerp(a, b, momentum=0.75).item() == 0.25
    assert MMagicHook.lerp(a, b, momentum=0.25).item() == 0.25
    assert MMEditHook.lerp(a, b, trainable=False).item() == 1.0      # momentum_nontrainable=0
    assert MMagicHook.lerp(a, b, trainable=False).item() == 1.0      # momentum_nontrainable=1
    assert MMEditHook.lerp(a, b, momentum=1.5).item() == -0.5         # never checked
    with pytest.warns(UserWarning, match='usually a small number'):
        MMagicHook.lerp(a, b, momentum=0.999)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        MMagicHook.lerp(a, b, momentum=0.5)


def test_flip_is_not_bitwise():
    """``1 - m`` in mmagic gives the same EMA in exact arithmetic but not in float32."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10000, generator=g), torch.randn(10000, generator=g)
    old = MMEditHook.lerp(a, b, momentum=0.999)
    new = MMagicHook.lerp(a, b, momentum=1 - 0.999)
    exact = a.double() + (b.double() - a.double()) * 0.999
    assert not torch.equal(old, new)
    assert (old.double() - exact).abs().max() < 1e-6 and (new.double() - exact).abs().max() < 1e-6


class _Model(nn.Module):
    def __init__(self, ema=True):
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        if ema:
            self.generator_ema = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


@pytest.mark.parametrize('cls', [MMEditHook, MMagicHook, LegacyExponentialMovingAverageHook])
def test_before_run_copies_with_warning_or_raises(cls):
    model = MMDataParallel(_Model(ema=False))
    hook = cls(module_keys='generator_ema')
    with pytest.warns(UserWarning, match='We do not suggest construct'):
        hook.before_run(types.SimpleNamespace(model=model))
    inner = model.module
    assert inner.generator_ema is not inner.generator
    assert all(torch.equal(x, y) for x, y in zip(inner.generator.state_dict().values(),
                                                 inner.generator_ema.state_dict().values()))
    with pytest.raises(RuntimeError, match='Cannot find both generator and generator_ema'):
        cls(module_keys='generator_ema').before_run(types.SimpleNamespace(model=nn.Linear(1, 1)))


def _call(hook, runner):
    if isinstance(hook, MMEditHook):
        hook.after_train_iter(runner)
    else:
        hook.after_train_iter(runner, runner.iter)


@pytest.mark.parametrize('cls', [MMEditHook, MMagicHook])
def test_interval_default_never_updates_after_start(cls):
    model = _Model()
    runner = types.SimpleNamespace(model=model, iter=0)
    hook = cls(module_keys='generator_ema', start_iter=2)
    for it in range(5):
        runner.iter = it
        with torch.no_grad():
            model.generator[0].weight.add_(1.0)
        before = model.generator_ema[0].weight.clone()
        _call(hook, runner)
        now = model.generator_ema[0].weight
        if it < 2:
            assert torch.equal(now, model.generator[0].weight)   # a copy
        else:
            assert torch.equal(now, before)                       # frozen from start_iter on


def test_integer_buffers_go_through_float32():
    model = _Model()
    runner = types.SimpleNamespace(model=model, iter=0)
    big = 2 ** 24 + 1
    model.generator[1].num_batches_tracked.fill_(big)
    MMEditHook(module_keys='generator_ema', interval=1).after_train_iter(runner)
    assert model.generator_ema[1].num_batches_tracked.item() == big - 1   # float32 rounding
    MMEditHook(module_keys='generator_ema', interval=1,
               interp_cfg=dict(momentum_nontrainable=0.5)).after_train_iter(runner)
    assert model.generator_ema[1].num_batches_tracked.item() == big - 1


def test_registry_scopes():
    assert HOOKS.get('ExponentialMovingAverageHook', scope='mmedit') is MMEditHook
    assert HOOKS.get('ExponentialMovingAverageHook', scope='mmagic') is MMagicHook
    assert HOOKS.get('legacy.LegacyExponentialMovingAverageHook') is \
        LegacyExponentialMovingAverageHook
    with pytest.raises(KeyError, match='ambiguous'):
        HOOKS.get('ExponentialMovingAverageHook')
    hook = HOOKS.build(dict(type='ExponentialMovingAverageHook', module_keys='generator_ema',
                            priority='VERY_HIGH'), scope='mmedit')
    assert isinstance(hook, MMEditHook) and hook.priority == 'VERY_HIGH'


# --- the harness runners --------------------------------------------------------------------
class _Probe:
    """Records the generator's state after every iteration (runs after the EMA hook)."""

    def __init__(self, generation):
        from compat_ema.mmcv.runner.hooks.hook import Hook as MMCVHook
        from compat_ema.mmengine.hooks.hook import Hook as EngineHook
        self.hook = (MMCVHook if generation == 'mmcv' else EngineHook)()
        self.states = []
        self.hook.after_train_iter = self._record

    def _record(self, runner, *args, **kwargs):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        self.states.append({k: v.clone() for k, v in model.generator.state_dict().items()})


def _run_mmcv(hook_cfg, with_ema, iters=6):
    model = TinyRestorer(seed=0, with_ema=with_ema)
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(generator_parameters(model), lr=0.1),
                             max_iters=iters, hook_scope='mmedit')
    runner.register_training_hooks(optimizer_config=dict())
    runner.register_hook_from_cfg(dict(hook_cfg))
    probe = _Probe('mmcv')
    runner.register_hook(probe.hook, priority='LOWEST')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner.run([ListLoader(list(make_loader(12, batch_size=2)))], [('train', iters)])
    return model, probe.states


def _run_engine(hook_cfg, with_ema, iters=6, scope='mmagic'):
    import tempfile
    work_dir = tempfile.mkdtemp(prefix='compat_ema_gan_')
    model = TinyRestorer(seed=0, with_ema=with_ema)
    probe = _Probe('mmengine')
    probe.hook.priority = 'LOWEST'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner = Runner(model, work_dir, train_dataloader=make_loader(12, 2),
                        train_cfg=dict(by_epoch=False, max_iters=iters),
                        optim_wrapper=torch.optim.SGD(generator_parameters(model), lr=0.1),
                        default_hooks=dict(checkpoint=None), custom_hooks=[dict(hook_cfg), probe.hook],
                        hook_scope=scope)
        runner.train()
    return model, probe.states


def _replay(initial, states, formula, m, m_nt, interval, start, trainable):
    """The EMA by hand from the recorded generator states (test-side reimplementation)."""
    ema = {k: v.clone() for k, v in initial.items()}
    for it, src in enumerate(states):
        if it < start:
            ema = {k: src[k].clone() for k in ema}
            continue
        if interval <= 0 or (it + 1 - start) % interval:
            continue
        for k in ema:
            mm = m if trainable[k] else m_nt
            a, b = src[k], ema[k]
            new = a + (b - a) * mm if formula == 'mmedit' else b + (a - b) * mm
            ema[k] = new.to(b.dtype)
    return ema


@pytest.mark.parametrize('interval,start', [(1, 0), (2, 1), (-1, 2)])
def test_mmedit_hook_in_harness_mmcv_runner(interval, start):
    cfg = dict(type='ExponentialMovingAverageHook', module_keys=('generator_ema',),
               interval=interval, start_iter=start, interp_cfg=dict(momentum=0.9))
    model, states = _run_mmcv(cfg, with_ema=True)
    init = TinyRestorer(seed=0).generator_ema.state_dict()
    trainable = {k: k.startswith(('fc.weight', 'fc.bias', 'bn.weight', 'bn.bias'))
                 for k in init}
    expected = _replay(init, states, 'mmedit', 0.9, 0.0, interval, start, trainable)
    got = model.generator_ema.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in got)


def test_mmagic_hook_in_harness_mmengine_runner():
    cfg = dict(type='ExponentialMovingAverageHook', module_keys='generator_ema', interval=1,
               interp_cfg=dict(momentum=0.1, momentum_nontrainable=0.5))
    model, states = _run_engine(cfg, with_ema=True)
    init = TinyRestorer(seed=0).generator_ema.state_dict()
    trainable = {k: k.startswith(('fc.weight', 'fc.bias', 'bn.weight', 'bn.bias'))
                 for k in init}
    expected = _replay(init, states, 'mmagic', 0.1, 0.5, 1, 0, trainable)
    got = model.generator_ema.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in got)


@pytest.mark.parametrize('with_ema', [True, False])
@pytest.mark.parametrize('interval,start', [(1, 0), (3, 2)])
def test_legacy_hook_under_mmengine_equals_mmedit_run(with_ema, interval, start):
    """Item 2 in the harness: the same training, mmedit under mmcv vs legacy under mmengine."""
    kw = dict(module_keys='generator_ema', interval=interval, start_iter=start,
              interp_cfg=dict(momentum=0.999))
    legacy_model, legacy_states = _run_mmcv(dict(type='ExponentialMovingAverageHook', **kw),
                                            with_ema)
    engine_model, engine_states = _run_engine(
        dict(type='LegacyExponentialMovingAverageHook', **kw), with_ema, scope='legacy')
    for a, b in zip(legacy_states, engine_states):
        assert all(torch.equal(a[k], b[k]) for k in a)      # the same training
    la, eb = legacy_model.state_dict(), engine_model.state_dict()
    assert list(la) == list(eb) and all(torch.equal(la[k], eb[k]) for k in la)
    # ... which mmagic's own hook with momentum = 1 - m does not reproduce bit for bit
    native_model, _ = _run_engine(dict(type='ExponentialMovingAverageHook', module_keys=kw[
        'module_keys'], interval=interval, start_iter=start,
        interp_cfg=dict(momentum=1 - 0.999, momentum_nontrainable=1.0)), with_ema)
    nb = native_model.generator_ema.state_dict()
    assert not all(torch.equal(la['generator_ema.' + k], nb[k]) for k in nb)


def test_mmgen_checks_and_rampup():
    from compat_ema.mmgen import ExponentialMovingAverageHook as MMGenHook
    assert HOOKS.get('ExponentialMovingAverageHook', scope='mmgen') is MMGenHook
    with pytest.raises(AssertionError, match='Supported interpolation functions'):
        MMGenHook(module_keys='generator_ema', interp_mode='every_n_iters')  # mmedit accepts it
    MMEditHook(module_keys='generator_ema', interp_mode='every_n_iters')
    with pytest.raises(AssertionError, match='Supported momentum policy'):
        MMGenHook(module_keys='generator_ema', momentum_policy='cosine')
    runner = types.SimpleNamespace(iter=9)
    # 0.5 ** (batch / min(kimg * 1000, (iter + 1) * batch * rampup)) = 0.5 ** (4 / 2)
    assert MMGenHook.rampup(runner, ema_kimg=10, ema_rampup=0.05, batch_size=4) == \
        dict(momentum=0.25)
    assert MMGenHook.rampup(runner, ema_kimg=0.004, ema_rampup=None, batch_size=4) == \
        dict(momentum=0.5)
    # interp_cfg is passed per call: 'trainable' in it is a TypeError at the first update
    model = _Model()
    hook = MMGenHook(module_keys='generator_ema', interval=1, interp_cfg=dict(trainable=True))
    with pytest.raises(TypeError):
        hook.after_train_iter(types.SimpleNamespace(model=model, iter=0))
