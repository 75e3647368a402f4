"""Fakes of the mmcv 1.6 hooks and helpers the runners register or use: ``OptimizerHook``,
``IterTimerHook``, ``LoggerHook``, ``CheckpointHook``, ``LogBuffer``, ``MMDataParallel``.

Part of the mmcv runner harness (:mod:`compat_ema.testing.mmcv_runner`, which re-exports
every name here); see that module for what is reproduced.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
from torch.nn.parallel import DataParallel

from ..mmcv.runner.hooks.hook import Hook

__all__ = ['MMDataParallel', 'LogBuffer', 'OptimizerHook', 'IterTimerHook', 'LoggerHook',
           'CheckpointHook']


class MMDataParallel(DataParallel):
    """``mmcv.parallel.MMDataParallel`` on the CPU: forwards ``train_step``/``val_step``/``test_step``.

    Both generations treat it as a wrapper (a DataParallel subclass), so hooks
    and checkpoints see the inner module. Also usable with the mmengine fake.
    """

    def train_step(self, *inputs, **kwargs):
        return self.module.train_step(*inputs, **kwargs)

    def val_step(self, *inputs, **kwargs):
        return self.module.val_step(*inputs, **kwargs)

    def test_step(self, *inputs, **kwargs):
        return self.module.test_step(*inputs, **kwargs)


class LogBuffer:
    """``mmcv.runner.LogBuffer``: running history of ``log_vars``."""

    def __init__(self):
        self.val_history: Dict[str, List[float]] = {}
        self.n_history: Dict[str, List[int]] = {}

    def update(self, vars: Dict[str, Any], count: int = 1) -> None:
        for key, value in vars.items():
            self.val_history.setdefault(key, []).append(value)
            self.n_history.setdefault(key, []).append(count)

    def clear(self) -> None:
        self.val_history.clear()
        self.n_history.clear()


class OptimizerHook(Hook):
    """``mmcv.runner.OptimizerHook``: zero_grad, backward of ``outputs['loss']``, step.

    Args:
        grad_clip: kwargs of ``clip_grad_norm_``, or None.
    """

    def __init__(self, grad_clip: Optional[dict] = None):
        self.grad_clip = grad_clip

    def after_train_iter(self, runner) -> None:
        runner.optimizer.zero_grad()
        runner.outputs['loss'].backward()
        if self.grad_clip is not None:
            params = [p for p in runner.model.parameters() if p.requires_grad and p.grad is not None]
            if params:
                norm = torch.nn.utils.clip_grad_norm_(params, **self.grad_clip)
                runner.log_buffer.update({'grad_norm': float(norm)}, runner.outputs['num_samples'])
        runner.optimizer.step()


class IterTimerHook(Hook):
    """``mmcv.runner.IterTimerHook`` (LOW): present for the hook order; records nothing."""


class LoggerHook(Hook):
    """Stand-in for mmcv's logger hooks (VERY_LOW): present for the hook order only."""

    def __init__(self, interval: int = 10, **kwargs):
        self.interval = interval


class CheckpointHook(Hook):
    """``mmcv.runner.CheckpointHook``.

    Saves in ``after_train_epoch`` (``by_epoch``) or ``after_train_iter`` when
    ``every_n_*(interval)`` holds or ``save_last`` and this is the last
    epoch/iteration; then sets ``runner.meta['hook_msgs']['last_ckpt']`` (only
    if ``runner.meta`` is not None). ``interval=-1`` (the default) means "only
    the last".
    """

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 out_dir: Optional[str] = None, max_keep_ckpts: int = -1, save_last: bool = True,
                 **kwargs):
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.args = kwargs

    def before_run(self, runner) -> None:
        if not self.out_dir:
            self.out_dir = runner.work_dir
        if self.out_dir != runner.work_dir:
            self.out_dir = osp.join(self.out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
        self.args.setdefault('create_symlink', True)

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval) or (self.save_last and self.is_last_epoch(runner)):
            runner.logger.info(f'Saving checkpoint at {runner.epoch + 1} epochs')
            self._save_checkpoint(runner)

    def after_train_iter(self, runner) -> None:
        if self.by_epoch:
            return
        if self.every_n_iters(runner, self.interval) or (self.save_last and self.is_last_iter(runner)):
            runner.logger.info(f'Saving checkpoint at {runner.iter + 1} iterations')
            self._save_checkpoint(runner)

    def _save_checkpoint(self, runner) -> None:
        runner.save_checkpoint(self.out_dir, save_optimizer=self.save_optimizer, **self.args)
        if self.by_epoch:
            name, step = 'epoch_{}.pth', runner.epoch + 1
        else:
            name, step = 'iter_{}.pth', runner.iter + 1
        tmpl = self.args.get('filename_tmpl', name)
        if runner.meta is not None:
            runner.meta.setdefault('hook_msgs', dict())
            runner.meta['hook_msgs']['last_ckpt'] = osp.join(self.out_dir, tmpl.format(step))  # type: ignore[arg-type]
        if self.max_keep_ckpts > 0:
            for old in range(step - self.max_keep_ckpts * self.interval, 0, -self.interval):
                path = osp.join(self.out_dir, tmpl.format(old))  # type: ignore[arg-type]
                if not osp.isfile(path):
                    break
                os.remove(path)
