"""docs/runner-behaviour.md#fake-runner-checklist (mmengine 0.10.7 Runner) checklist against the
harness fake.

Expected values are the real runner's facts (docs/runner-behaviour.md), not outputs of the code
under test.
"""
from __future__ import annotations

import logging

import pytest
import torch

from compat_ema.mmengine.hooks.hook import Hook
from compat_ema.testing.mmengine_runner import Runner
from compat_ema.testing.models import TinyModel, make_loader
from compat_ema.testing.scenario import run_scenario
from compat_ema.testing.trace import hexf

ENG = [dict(type='EMAHook', momentum=0.5)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)
    torch.set_num_threads(n)


def test_default_hook_order_c5(tmp_path):
    r = run_scenario('mmengine', 'epoch', max_epochs=1, hooks=ENG, recorders=(), work_dir=str(tmp_path))
    assert [n for n, _ in r.hooks] == ['RuntimeInfoHook', 'IterTimerHook', 'DistSamplerSeedHook',
                                       'EMAHook', 'LoggerHook', 'ParamSchedulerHook', 'CheckpointHook']
    assert [p for _, p in r.hooks] == [10, 50, 50, 50, 60, 70, 90]


def test_epoch_loop_counters_and_checkpoint_stage_c2(tmp_path):
    r = run_scenario('mmengine', 'epoch', max_epochs=2, hooks=ENG, work_dir=str(tmp_path))
    lo = [(e.method, e.iter, e.epoch, e.inner) for e in r.trace if e.rec == 'lo']
    assert lo[:3] == [('before_run', 0, 0, None), ('before_train', 0, 0, None),
                      ('before_train_epoch', 0, 0, None)]
    i = [m for m, *_ in lo].index('before_save_checkpoint')
    # LOWEST hook sees before_save_checkpoint before its own after_train_epoch
    assert lo[i:i + 3] == [('before_save_checkpoint', 3, 0, None), ('after_train_epoch', 3, 0, None),
                           ('before_val', 3, 1, None)]
    assert lo[-2:] == [('after_train', 6, 2, None), ('after_run', 6, 2, None)]


def test_checkpoint_keys_meta_and_ema_swap_c6(tmp_path):
    r = run_scenario('mmengine', 'epoch', max_epochs=2, hooks=ENG, work_dir=str(tmp_path))
    ck = r.checkpoints['epoch_1.pth']
    assert list(ck) == ['meta', 'state_dict', 'message_hub', 'optimizer', 'ema_state_dict']
    assert (ck['meta']['epoch'], ck['meta']['iter']) == (1, 3)
    assert list(ck['ema_state_dict'])[0] == 'steps' and int(ck['ema_state_dict']['steps']) == 3
    save = r.trace.where('before_save_checkpoint', 'lo')[0]
    assert save.x['sd_w'] == save.ema_w          # state_dict holds the EMA weights
    assert hexf(ck['ema_state_dict']['module.fc.weight'][0, 0]) == save.w   # ema_state_dict the raw
    assert open(tmp_path / 'last_checkpoint').read() == str(tmp_path / 'epoch_2.pth')


def test_iter_loop_batch_idx_epoch_val_and_ckpt_schedule_c3(tmp_path):
    r = run_scenario('mmengine', 'iter', max_iters=5, val_interval=2, hooks=ENG,
                     checkpoint=dict(interval=2, by_epoch=False), work_dir=str(tmp_path))
    rows = [(e.iter, e.epoch, e.inner) for e in r.trace.where('before_train_iter', 'hi')]
    assert rows == [(i, 0, i) for i in range(5)]
    assert [e.iter for e in r.trace.where('before_val', 'hi')] == [2, 4, 5]
    assert sorted(r.checkpoints) == ['iter_2.pth', 'iter_4.pth', 'iter_5.pth']
    assert [(c['meta']['epoch'], c['meta']['iter']) for _, c in sorted(r.checkpoints.items())] == [
        (0, 2), (0, 4), (0, 5)]
    assert r.trace.methods('hi').count('before_train_epoch') == 1
    r = run_scenario('mmengine', 'iter', max_iters=5, val_interval=2, hooks=ENG,
                     work_dir=str(tmp_path / 'default'))
    assert list(r.checkpoints) == ['epoch_1.pth']
    assert (r.checkpoints['epoch_1.pth']['meta']['epoch'], r.checkpoints['epoch_1.pth']['meta']['iter']) == (1, 5)


@pytest.mark.parametrize('max_epochs,interval,begin,val_at', [(3, 2, 1, [2, 3]), (4, 3, 2, [3, 4])])
def test_val_schedule_c2(tmp_path, max_epochs, interval, begin, val_at):
    r = run_scenario('mmengine', 'epoch', max_epochs=max_epochs, val_interval=interval,
                     val_begin=begin, work_dir=str(tmp_path))
    assert [e.epoch for e in r.trace.where('before_val', 'hi')] == val_at


def test_load_before_model_and_resume_restores_counters_c7(tmp_path):
    full = run_scenario('mmengine', 'iter', max_iters=5, val_interval=2, hooks=ENG,
                        checkpoint=dict(interval=2, by_epoch=False), work_dir=str(tmp_path / 'a'))
    r = run_scenario('mmengine', 'iter', max_iters=5, val_interval=2, hooks=ENG,
                     checkpoint=dict(interval=2, by_epoch=False), work_dir=str(tmp_path / 'b'),
                     resume=dict(how='resume', checkpoint=str(tmp_path / 'a' / 'iter_2.pth')))
    load = r.trace.where('after_load_checkpoint', 'lo')[0]
    assert load.w == hexf(TinyModel().fc.weight[0, 0])      # the model has not loaded yet
    assert [e.inner for e in r.trace.where('before_train_iter', 'hi')] == [2, 3, 4]
    assert r.trace.where('before_train', 'hi')[0].iter == 2
    assert all(torch.equal(full.final[k], r.final[k]) for k in full.final)
    assert all(torch.equal(full.ema[k], r.ema[k]) for k in full.ema)


def test_every_entry_point_fires_before_run_and_rebuilds_ema_c9(tmp_path):
    from compat_ema.doctor import EMASetupWarning
    with pytest.warns(EMASetupWarning, match=r'runner.train\(\) then runner.test\(\)'):
        r = run_scenario('mmengine', 'epoch', max_epochs=2, hooks=ENG, test=True, work_dir=str(tmp_path))
    assert r.trace.methods('hi').count('before_run') == 2
    test_start = r.trace.where('before_test_epoch', 'hi')[0]
    assert test_start.steps == 0 and test_start.ema_w == test_start.w   # EMA rebuilt from raw


def test_standalone_val_sees_zero_counters(tmp_path):
    seen = []

    class Probe(Hook):
        def before_val_iter(self, runner, batch_idx, data_batch=None):
            seen.append((runner.iter, runner.epoch, batch_idx))

    runner = Runner(TinyModel(), str(tmp_path), val_dataloader=make_loader(4), val_cfg=dict(),
                    custom_hooks=[Probe()])
    assert runner.val() == {}
    assert seen == [(0, 0, 0), (0, 0, 1)]


def test_scheduler_key_and_bad_config(tmp_path):
    model = TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    runner = Runner(model, str(tmp_path), train_dataloader=make_loader(4),
                    train_cfg=dict(by_epoch=True, max_epochs=1), optim_wrapper=opt,
                    param_scheduler=[sched], custom_hooks=[dict(type='EMAHook')])
    runner.train()
    ck = torch.load(tmp_path / 'epoch_1.pth')
    assert list(ck) == ['meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers',
                        'ema_state_dict']
    with pytest.raises(ValueError, match='train_dataloader and train_cfg'):
        Runner(TinyModel(), str(tmp_path), train_cfg=dict(max_epochs=1), optim_wrapper=opt)
    with pytest.raises(KeyError, match='not in the hook registry'):
        Runner(TinyModel(), str(tmp_path), custom_hooks=[dict(type='NoSuchHook')])


def test_train_then_test_warns_without_changing_numbers(tmp_path):
    from compat_ema.testing.mmcv_runner import EMASetupWarning
    with pytest.warns(EMASetupWarning, match='rebuilds the EMA model'):
        r = run_scenario('mmengine', 'epoch', max_epochs=1, hooks=ENG, test=True,
                         work_dir=str(tmp_path / 'a'), probes=dict(lr=lambda runner: 0.5))
    assert r.trace[0].x == {'lr': 0.5}
    q = run_scenario('mmengine', 'epoch', max_epochs=1, hooks=ENG, work_dir=str(tmp_path / 'b'))
    assert all(torch.equal(r.final[k], q.final[k]) for k in q.final)


def test_mmdataparallel_under_the_mmengine_runner(tmp_path):
    from compat_ema.testing.mmcv_runner import MMDataParallel
    r = run_scenario('mmengine', 'epoch', max_epochs=1, hooks=ENG, model=MMDataParallel(TinyModel()),
                     work_dir=str(tmp_path))
    q = run_scenario('mmengine', 'epoch', max_epochs=1, hooks=ENG, work_dir=str(tmp_path / 'plain'))
    assert list(r.checkpoints['epoch_1.pth']['state_dict']) == list(q.checkpoints['epoch_1.pth']['state_dict'])
    assert all(torch.equal(r.final[k], q.final[k]) for k in q.final)
