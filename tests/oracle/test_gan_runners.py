"""The GAN/restoration EMA hooks inside the REAL runners.

* the mmedit 0.16.1 hook (real file vs compat's, made an ``mmcv.runner.Hook`` by
  ``compat_ema.integrations.mmcv``) in the real mmcv 1.6.0 ``IterBasedRunner``;
* the mmagic 1.2.0 hook (real file vs compat's, through the mmengine plugin) in the real
  mmengine 0.10.7 ``Runner``;
* item 2: the real mmcv runner + real mmedit hook versus the real mmengine Runner + compat's
  ``LegacyExponentialMovingAverageHook``, ``load_from`` included.

Same weights, data and optimizer (SGD lr 0.1, momentum 0.9) on both sides; a probe at LOWEST
priority records the generator and the EMA after every iteration; everything is compared bit
for bit, after every iteration and at the end (and every checkpoint's ``state_dict``).
"""
from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import gan_native
from runner_kit import QUIET, diff, load, loader, make_batches, real_runners  # noqa: F401

try:
    gan_native.native_dir()
except RuntimeError as exc:
    pytest.skip(str(exc), allow_module_level=True)


def _generator(frozen: bool) -> nn.Module:
    g = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    if frozen:
        g[3].requires_grad_(False)
    return g


def _build(net: nn.Module, with_ema: bool, frozen: bool, seed: int) -> None:
    torch.manual_seed(seed)
    net.generator = _generator(frozen)
    if with_ema:
        torch.manual_seed(seed + 1)
        net.generator_ema = _generator(frozen)


class MMCVGan(nn.Module):
    def __init__(self, with_ema=True, frozen=True, seed=0):
        super().__init__()
        _build(self, with_ema, frozen, seed)

    def train_step(self, data_batch, optimizer=None, **kwargs):
        x, y = data_batch
        loss = ((self.generator(x) - y) ** 2).mean()
        return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=len(x))


def engine_gan(with_ema=True, frozen=True, seed=0):
    from mmengine.model import BaseModel

    class EngineGan(BaseModel):
        def __init__(self):
            super().__init__()
            _build(self, with_ema, frozen, seed)

        def forward(self, x, y=None, mode='tensor'):
            out = self.generator(x)
            return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else [out]

    return EngineGan()


def _snap(model) -> dict:
    model = model.module if hasattr(model, 'module') else model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mmcv_probe():
    import mmcv.runner as mr

    class Probe(mr.Hook):
        def __init__(self):
            self.log = []

        def after_train_iter(self, runner):
            self.log.append((runner.iter, _snap(runner.model)))
    return Probe()


def engine_probe():
    import mmengine.hooks as eh

    class Probe(eh.Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.log = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.log.append((runner.iter, _snap(runner.model)))
    return Probe()


def run_mmcv(work_dir: Path, hook, batches, with_ema=True, iters=6, load_from=None,
             ckpt_interval=1):
    import mmcv.runner as mr
    model = MMCVGan(with_ema)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    runner = mr.IterBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir), logger=QUIET,
                                max_iters=iters)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                   checkpoint_config=dict(interval=ckpt_interval, by_epoch=False),
                                   log_config=None)
    runner.register_hook(hook)            # custom hooks: NORMAL, after CheckpointHook
    probe = mmcv_probe()
    runner.register_hook(probe, priority='LOWEST')
    if load_from is not None:
        runner.load_checkpoint(load_from, map_location='cpu')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner.run([loader(batches)], [('train', iters)])
    return model, probe.log


def run_engine(work_dir: Path, hook, batches, with_ema=True, iters=6, load_from=None,
               resume=False, extra_hooks=()):
    from mmengine.runner import Runner
    model = engine_gan(with_ema)
    probe = engine_probe()
    runner = Runner(model=model, work_dir=str(work_dir), default_scope='mmengine',
                    train_dataloader=loader(batches),
                    train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=10 ** 6),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
                    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                                       by_epoch=False),
                                       logger=dict(type='LoggerHook', interval=10 ** 6)),
                    custom_hooks=[hook, *extra_hooks, probe], load_from=load_from, resume=resume,
                    randomness=dict(seed=0), log_level='ERROR',
                    experiment_name=f'gan_{uuid.uuid4().hex[:12]}')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner.train()
    return model, probe.log, runner


def _same_logs(a, b):
    assert [i for i, _ in a] == [i for i, _ in b]
    for (it, x), (_, y) in zip(a, b):
        bad = diff(x, y)
        assert not bad, f'iter {it}: {bad[:5]}'


CFGS = [dict(module_keys='generator_ema', interval=1, interp_cfg=dict(momentum=0.999)),
        dict(module_keys=('generator_ema',), interval=2, start_iter=2,
             interp_cfg=dict(momentum=0.6, momentum_nontrainable=0.5)),
        dict(module_keys='generator_ema')]


@pytest.mark.parametrize('with_ema', [True, False])
@pytest.mark.parametrize('cfg', range(len(CFGS)))
def test_mmedit_hook_in_real_mmcv_runner(real_runners, tmp_path, cfg, with_ema):
    from compat_ema.integrations.mmcv import ExponentialMovingAverageHook as Compat
    kw = CFGS[cfg]
    batches = make_batches(6, seed=cfg)
    real_model, real_log = run_mmcv(tmp_path / 'real', gan_native.mmedit_cls()(**kw), batches,
                                    with_ema)
    ours_model, ours_log = run_mmcv(tmp_path / 'ours', Compat(**kw), batches, with_ema)
    _same_logs(real_log, ours_log)
    assert not diff(_snap(real_model), _snap(ours_model))
    for name in sorted(p.name for p in (tmp_path / 'real').glob('iter_*.pth')):
        assert not diff(load(tmp_path / 'real' / name)['state_dict'],
                        load(tmp_path / 'ours' / name)['state_dict']), name


@pytest.mark.parametrize('with_ema', [True, False])
@pytest.mark.parametrize('cfg', [dict(module_keys='generator_ema', interval=1,
                                      interp_cfg=dict(momentum=0.001)),
                                 dict(module_keys=('generator_ema',), interval=3, start_iter=1,
                                      interp_cfg=dict(momentum=0.3, momentum_nontrainable=0.5)),
                                 dict(module_keys='generator_ema', start_iter=3)])
def test_mmagic_hook_in_real_mmengine_runner(real_runners, tmp_path, cfg, with_ema):
    batches = make_batches(6, seed=7)
    real_model, real_log, _ = run_engine(tmp_path / 'real', gan_native.mmagic_cls()(**cfg),
                                         batches, with_ema)
    ours_model, ours_log, _ = run_engine(
        tmp_path / 'ours', dict(type='CompatMMagicExponentialMovingAverageHook', **cfg), batches,
        with_ema)
    _same_logs(real_log, ours_log)
    assert not diff(_snap(real_model), _snap(ours_model))
    for name in sorted(p.name for p in (tmp_path / 'real').glob('iter_*.pth')):
        assert not diff(load(tmp_path / 'real' / name)['state_dict'],
                        load(tmp_path / 'ours' / name)['state_dict']), name


@pytest.mark.parametrize('with_ema,use_load_from', [(True, False), (False, False), (False, True),
                                                     (True, True)])
@pytest.mark.parametrize('cfg', range(len(CFGS)))
def test_legacy_hook_reproduces_mmedit_run_under_mmengine(real_runners, tmp_path, cfg, with_ema,
                                                          use_load_from):
    kw = CFGS[cfg]
    batches = make_batches(6, seed=10 + cfg)
    load_from = None
    if use_load_from:  # a checkpoint with other generator and generator_ema weights
        other = MMCVGan(with_ema=True, seed=99)
        load_from = str(tmp_path / 'pretrained.pth')
        torch.save({'state_dict': other.state_dict()}, load_from)
    real_model, real_log = run_mmcv(tmp_path / 'mmcv', gan_native.mmedit_cls()(**kw), batches,
                                    with_ema, load_from=load_from)
    ours_model, ours_log, _ = run_engine(
        tmp_path / 'engine', dict(type='LegacyExponentialMovingAverageHook', **kw), batches,
        with_ema, load_from=load_from)
    _same_logs(real_log, ours_log)
    assert not diff(_snap(real_model), _snap(ours_model))
