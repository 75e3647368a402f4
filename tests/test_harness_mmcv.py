"""docs/runner-behaviour.md#fake-runner-checklist (mmcv 1.6 runners) checklist against the harness
fakes.

Expected values are the real runners' numbers (docs/runner-behaviour.md) (counters, orders, meta),
not outputs of the code under test.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn as nn

from compat_ema.mmcv.runner.hooks.hook import Hook
from compat_ema.testing import mmcv_checkpoint
from compat_ema.testing.mmcv_runner import (CheckpointHook, EMASetupWarning, EpochBasedRunner,
                                            IterBasedRunner, IterLoader, MMDataParallel,
                                            OptimizerHook)
from compat_ema.testing.models import ListLoader, TinyModel, make_loader
from compat_ema.testing.scenario import run_scenario

pytestmark = pytest.mark.filterwarnings('ignore::compat_ema.testing.mmcv_runner.EMASetupWarning')
EXP49 = [dict(type='ExpMomentumEMAHook', momentum=0.3, total_iter=5, priority=49)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)
    torch.set_num_threads(n)


def _rows(result, method, rec='lo'):
    return [(e.iter, e.epoch, e.inner) for e in result.trace.where(method, rec)]


def test_epoch_runner_counters_a2(tmp_path):
    r = run_scenario('mmcv', 'epoch', max_epochs=2, workflow=[('train', 1), ('val', 1)],
                     work_dir=str(tmp_path), hooks=EXP49)
    assert _rows(r, 'before_run') == [(0, 0, 0)]
    assert _rows(r, 'after_train_iter')[:3] == [(0, 0, 0), (1, 0, 1), (2, 0, 2)]
    assert _rows(r, 'after_train_epoch') == [(3, 0, 2), (6, 1, 2)]
    assert _rows(r, 'before_val_epoch') == [(3, 1, 2), (6, 2, 2)]
    assert _rows(r, 'after_val_epoch') == [(3, 1, 1), (6, 2, 1)]
    assert _rows(r, 'before_train_epoch') == [(0, 0, 0), (3, 1, 1)]
    assert _rows(r, 'after_run') == [(6, 2, 1)]
    assert r.trace.where('before_run')[0].mode is None and r.trace.where('after_run')[0].mode == 'val'


@pytest.mark.parametrize('workflow,max_epochs,phases', [
    ([('train', 1)], 2, ['train', 'train']),
    ([('train', 1), ('val', 1)], 2, ['train', 'val', 'train', 'val']),
    ([('train', 2), ('val', 1)], 3, ['train', 'train', 'val', 'train', 'val']),
    ([('val', 1), ('train', 1)], 1, ['val', 'train']),
])
def test_workflow_interleaving_a3(tmp_path, workflow, max_epochs, phases):
    r = run_scenario('mmcv', 'epoch', max_epochs=max_epochs, workflow=workflow,
                     work_dir=str(tmp_path), checkpoint=None)
    seen = [e.method.split('_')[1] for e in r.trace
            if e.rec == 'hi' and e.method in ('before_train_epoch', 'before_val_epoch')]
    assert seen == phases
    assert r.runner.epoch == max_epochs


def test_iter_runner_calls_only_generic_epoch_methods_a4(tmp_path):
    r = run_scenario('mmcv', 'iter', max_iters=5, workflow=[('train', 2), ('val', 1)],
                     work_dir=str(tmp_path), hooks=EXP49, checkpoint=None)
    methods = r.trace.methods('hi')
    assert methods.count('before_epoch') == 1 and methods.count('after_epoch') == 1
    assert not {'before_train_epoch', 'after_train_epoch', 'before_val_epoch'} & set(methods)
    steps = [('T' if e.method == 'before_train_iter' else 'V', e.iter) for e in r.trace
             if e.rec == 'hi' and e.method in ('before_train_iter', 'before_val_iter')]
    assert steps == [('T', 0), ('T', 1), ('V', 2), ('T', 2), ('T', 3), ('V', 4), ('T', 4), ('V', 5)]
    # epoch lags the wrap-around by one iteration (3 batches per pass)
    epochs = [e.epoch for e in r.trace.where('before_train_iter', 'hi')]
    assert epochs == [0, 0, 0, 0, 1]
    # no swap ever: the model keeps the raw weights (w != ema_w) at after_run
    last = r.trace.where('after_run', 'lo')[0]
    assert last.w != last.ema_w and (last.nbt, last.ema_nbt) == (5, 0)


def test_priority_stable_insertion_and_reserved_attribute():
    runner = EpochBasedRunner(TinyModel(), optimizer=None, max_epochs=1)
    a, b, c, d = Hook(), Hook(), Hook(), Hook()
    runner.register_hook(a, 'NORMAL')
    runner.register_hook(b, 49)
    runner.register_hook(c, 'normal')
    runner.register_hook(d, 'HIGHEST')
    assert runner.hooks == [d, b, a, c]
    with pytest.raises(ValueError, match='reserved'):
        runner.register_hook(a, 'LOW')
    with pytest.raises(TypeError):
        runner.register_hook(Hook(), 50.0)


@pytest.mark.parametrize('priority,order', [
    ('NORMAL', ['OptimizerHook', 'CheckpointHook', 'ExpMomentumEMAHook', 'IterTimerHook']),
    (49, ['OptimizerHook', 'ExpMomentumEMAHook', 'CheckpointHook', 'IterTimerHook']),
])
def test_register_training_hooks_order_a6(tmp_path, priority, order):
    r = run_scenario('mmcv', 'epoch', max_epochs=1, work_dir=str(tmp_path), recorders=(),
                     hooks=[dict(type='ExpMomentumEMAHook', momentum=0.3, priority=priority)])
    assert [name for name, _ in r.hooks] == order
    assert [p for _, p in r.hooks] == sorted(p for _, p in r.hooks)


def test_optimizer_step_happens_at_priority_40():
    """A hook above 40 sees pre-step weights in after_train_iter, one below sees post-step."""
    seen = []

    class Probe(Hook):
        def __init__(self, tag):
            self.tag = tag

        def after_train_iter(self, runner):
            seen.append((self.tag, runner.model.fc.weight[0, 0].item()))

    model = TinyModel()
    w0 = model.fc.weight[0, 0].item()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              max_epochs=1)
    runner.register_training_hooks(optimizer_config=dict(), timer_config=None)
    runner.register_hook(Probe('before'), 39)
    runner.register_hook(Probe('after'), 41)
    runner.run([ListLoader(list(make_loader(2)))], [('train', 1)])
    assert seen[0] == ('before', w0) and seen[1][0] == 'after' and seen[1][1] != w0


def test_save_checkpoint_meta_names_and_hook_msgs_a7(tmp_path):
    r = run_scenario('mmcv', 'epoch', max_epochs=2, work_dir=str(tmp_path), hooks=EXP49)
    e1, e2 = r.checkpoints['epoch_1.pth'], r.checkpoints['epoch_2.pth']
    assert list(e1) == ['meta', 'state_dict', 'optimizer']
    assert (e1['meta']['epoch'], e1['meta']['iter']) == (1, 3) and 'hook_msgs' not in e1['meta']
    assert e2['meta']['hook_msgs']['last_ckpt'] == os.path.join(str(tmp_path), 'epoch_1.pth')
    assert e1['meta']['mmcv_version'] == '1.6.0' and 'time' in e1['meta']
    assert os.readlink(tmp_path / 'latest.pth') == 'epoch_2.pth'
    keys = list(e1['state_dict'])
    assert keys[:7] == ['ema_fc_weight', 'ema_fc_bias', 'ema_bn_weight', 'ema_bn_bias',
                        'ema_bn_running_mean', 'ema_bn_running_var', 'ema_bn_num_batches_tracked']
    r = run_scenario('mmcv', 'iter', max_iters=4, work_dir=str(tmp_path / 'it'), checkpoint=2)
    assert (r.checkpoints['iter_2.pth']['meta']['epoch'], r.checkpoints['iter_2.pth']['meta']['iter']) == (1, 1)


def test_get_state_dict_keeps_non_persistent_buffers_and_unwraps():
    model = TinyModel()
    model.register_buffer('scratch', torch.ones(2), persistent=False)
    sd = mmcv_checkpoint.get_state_dict(MMDataParallel(model))
    assert 'scratch' in sd and 'scratch' not in model.state_dict()
    assert not any(k.startswith('module.') for k in sd)

    class Fake(nn.Module):  # a .module attribute alone does not make a wrapper
        def __init__(self):
            super().__init__()
            self.module = TinyModel()

    assert next(iter(mmcv_checkpoint.get_state_dict(Fake()))) == 'module.fc.weight'


def test_load_checkpoint_strictness_a9(tmp_path, caplog):
    src = TinyModel()
    src.register_buffer('ema_fc_weight', src.fc.weight.detach().clone())
    mmcv_checkpoint.save_checkpoint(src, str(tmp_path / 'a.pth'))
    sd = torch.load(tmp_path / 'a.pth')['state_dict']
    sd.pop('bn.num_batches_tracked')
    torch.save({'state_dict': sd}, tmp_path / 'b.pth')
    dst = TinyModel(seed=1)
    logger = logging.getLogger('t_a9')
    logging.disable(logging.NOTSET)
    with caplog.at_level(logging.WARNING, logger='t_a9'):
        mmcv_checkpoint.load_checkpoint(dst, str(tmp_path / 'b.pth'), logger=logger)
    assert 'unexpected key in source state_dict: ema_fc_weight' in caplog.text
    assert 'num_batches_tracked' not in caplog.text
    assert torch.equal(dst.fc.weight, src.fc.weight) and not hasattr(dst, 'ema_fc_weight')
    with pytest.raises(RuntimeError, match='ema_fc_weight'):
        mmcv_checkpoint.load_checkpoint(TinyModel(), str(tmp_path / 'b.pth'), strict=True)


def test_resume_epoch_vs_iter_runner_a8(tmp_path):
    run_scenario('mmcv', 'epoch', max_epochs=2, work_dir=str(tmp_path / 'e'))
    model = TinyModel()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              meta=dict(keep='me'), max_epochs=3)
    runner.resume(str(tmp_path / 'e' / 'epoch_2.pth'))
    assert (runner.epoch, runner.iter, runner.inner_iter) == (2, 6, 0)
    assert runner.meta['hook_msgs']['last_ckpt'].endswith('epoch_1.pth') and 'keep' not in runner.meta
    run_scenario('mmcv', 'iter', max_iters=4, checkpoint=2, work_dir=str(tmp_path / 'i'))
    model = TinyModel()
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             meta=dict(keep='me'), max_iters=4)
    runner.resume(str(tmp_path / 'i' / 'iter_2.pth'), map_location='cpu')
    assert (runner.epoch, runner.iter, runner.inner_iter) == (1, 1, 1)
    assert runner.meta == dict(keep='me')
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):   # CPU build / CUDA build without GPU
            runner.resume(str(tmp_path / 'i' / 'iter_2.pth'))
    r = run_scenario('mmcv', 'iter', max_iters=4, checkpoint=2, work_dir=str(tmp_path / 'r'),
                     resume=dict(how='runner', checkpoint=str(tmp_path / 'i' / 'iter_2.pth'),
                                 map_location='cpu'))
    assert [e.iter for e in r.trace.where('before_train_iter', 'hi')] == [1, 2, 3]   # repeats iter 1


def test_iter_loader_needs_a_sampler_attribute():
    loader = IterLoader([1, 2])
    assert [next(loader), next(loader)] == [1, 2]
    with pytest.raises(AttributeError, match='sampler'):
        next(loader)
    loader = IterLoader(ListLoader([1, 2]))
    assert [next(loader) for _ in range(3)] == [1, 2, 1] and loader.epoch == 1


def test_mmdataparallel_model_runs_and_hooks_unwrap(tmp_path):
    r = run_scenario('mmcv', 'epoch', model=MMDataParallel(TinyModel()), max_epochs=1,
                     work_dir=str(tmp_path), hooks=EXP49)
    assert 'ema_fc_weight' in r.final and not any(k.startswith('module.') for k in r.checkpoints['epoch_1.pth']['state_dict'])


def test_train_detector_order_runner_resume_before_run_warns(tmp_path):
    run_scenario('mmcv', 'epoch', max_epochs=1, work_dir=str(tmp_path / 'a'), hooks=EXP49)
    with pytest.warns(EMASetupWarning, match='ema_\\* keys are dropped'):
        r = run_scenario('mmcv', 'epoch', max_epochs=2, work_dir=str(tmp_path / 'b'), hooks=EXP49,
                         resume=dict(how='runner', checkpoint=str(tmp_path / 'a' / 'epoch_1.pth')))
    lo = r.trace.where('before_run', 'lo')[0]
    # docs/runner-behaviour.md#resume-matrix: buffers re-cloned from the loaded (EMA) weights
    assert lo.w == lo.ema_w


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='Only one'):
        EpochBasedRunner(TinyModel(), max_epochs=1, max_iters=1)
    with pytest.raises(AssertionError, match='train_step'):
        EpochBasedRunner(nn.Linear(1, 1), max_epochs=1)
    with pytest.raises(TypeError, match='logger'):
        EpochBasedRunner(TinyModel(), logger='x', max_epochs=1)
    with pytest.raises(ValueError, match='max_epochs'):
        run_scenario('mmcv', 'epoch')


def test_warnings_never_change_numbers_and_guard_hook_is_opt_in(tmp_path):
    import warnings as w
    from compat_ema.doctor import EMAGuardHook
    run_scenario('mmcv', 'epoch', max_epochs=1, work_dir=str(tmp_path / 'a'), hooks=EXP49)
    ckpt = str(tmp_path / 'a' / 'epoch_1.pth')
    finals = []
    for warn in (True, False):
        model = TinyModel()
        runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                                                   momentum=0.9),
                                  work_dir=str(tmp_path / f'b{warn}'), meta={}, max_epochs=2,
                                  warn_ema=warn)
        runner.register_training_hooks(optimizer_config=dict(), checkpoint_config=dict(interval=1),
                                       custom_hooks_config=EXP49)
        if not warn:
            runner.register_hook(EMAGuardHook(), 'HIGHEST')
        runner.resume(ckpt)
        with w.catch_warnings(record=True) as caught:
            w.simplefilter('always')
            runner.run([make_loader(6)], [('train', 1)])
        msgs = [str(c.message) for c in caught if c.category is EMASetupWarning]
        assert any('ema_* keys are dropped' in m for m in msgs), msgs
        finals.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


@pytest.mark.parametrize('value', [0.0, -0.0, 1.0, -0.00374, 3.0e-38, 0.1, 12345.678, float('inf')])
def test_hexf_is_exact(value):
    from compat_ema.testing.trace import hexf, tensor_digest
    assert float.fromhex(hexf(value)) == value
    assert not hexf(value).rstrip('p+-0123456789').endswith('0')
    t = torch.tensor([value], dtype=torch.float32)
    assert float.fromhex(hexf(t[0])) == t[0].item()
    assert tensor_digest(t) == tensor_digest(t.clone()) != tensor_digest(t.double())
