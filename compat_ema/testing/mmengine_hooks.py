"""Fakes of the mmengine 0.10.7 pieces around the runner: ``OptimWrapper``, ``MessageHub``
and the default hooks (``RuntimeInfoHook`` ... ``CheckpointHook``).

Part of the mmengine runner harness (:mod:`compat_ema.testing.mmengine_runner`, which
re-exports every name here); see that module for what is reproduced.
"""
from __future__ import annotations

import contextlib
import copy
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..core.checks import require
from ..mmengine.hooks.hook import Hook

__all__ = ['MMENGINE_VERSION', 'OptimWrapper', 'MessageHub', 'RuntimeInfoHook', 'IterTimerHook',
           'DistSamplerSeedHook', 'LoggerHook', 'ParamSchedulerHook', 'CheckpointHook']

MMENGINE_VERSION = '0.10.7'


class OptimWrapper:
    """``mmengine.optim.OptimWrapper`` without accumulation or AMP: backward, step, zero_grad."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer

    def update_params(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module):
        yield

    def initialize_count_status(self, model: nn.Module, init_counts: int, max_counts: int) -> None:
        self._inner_count = init_counts
        self._max_counts = max_counts

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    @property
    def param_groups(self):
        return self.optimizer.param_groups


class MessageHub:
    """A dict-backed stand-in for ``mmengine.logging.MessageHub`` (plain Python values)."""

    def __init__(self):
        self.log_scalars: Dict[str, List[float]] = {}
        self.runtime_info: Dict[str, Any] = {}

    def update_info(self, key: str, value: Any) -> None:
        self.runtime_info[key] = value

    def get_info(self, key: str, default: Any = None) -> Any:
        return self.runtime_info.get(key, default)

    def update_scalar(self, key: str, value: float) -> None:
        self.log_scalars.setdefault(key, []).append(float(value))

    def state_dict(self) -> dict:
        return dict(log_scalars=copy.deepcopy(self.log_scalars),
                    runtime_info=copy.deepcopy(self.runtime_info), resumed_keys={})

    def load_state_dict(self, state: dict) -> None:
        if isinstance(state.get('log_scalars'), dict):
            self.log_scalars = {k: list(v) for k, v in state['log_scalars'].items()
                                if isinstance(v, (list, tuple))}
        if isinstance(state.get('runtime_info'), dict):
            self.runtime_info = dict(state['runtime_info'])


# -- default hooks --------------------------------------------------------------


class RuntimeInfoHook(Hook):
    """``RuntimeInfoHook`` (VERY_HIGH): epoch/iter/max counters and losses into the message hub."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        for key in ('epoch', 'iter', 'max_epochs', 'max_iters'):
            runner.message_hub.update_info(key, getattr(runner, key))

    def before_train_epoch(self, runner) -> None:
        runner.message_hub.update_info('epoch', runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        runner.message_hub.update_info('iter', runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for key, value in (outputs or {}).items():
            if isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1):
                runner.message_hub.update_scalar(f'train/{key}', float(value))


class IterTimerHook(Hook):
    """``IterTimerHook`` (NORMAL): present for the hook order."""

    priority = 'NORMAL'


class DistSamplerSeedHook(Hook):
    """``DistSamplerSeedHook`` (NORMAL): ``sampler.set_epoch(runner.epoch)`` when it exists."""

    priority = 'NORMAL'

    def before_train_epoch(self, runner) -> None:
        sampler = getattr(runner.train_loop.dataloader, 'sampler', None)
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(runner.epoch)  # type: ignore[union-attr]


class LoggerHook(Hook):
    """``LoggerHook`` (BELOW_NORMAL): present for the hook order."""

    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 10, **kwargs):
        self.interval = interval


class ParamSchedulerHook(Hook):
    """``ParamSchedulerHook`` (LOW): steps ``runner.param_schedulers`` (objects with ``step()``).

    A scheduler steps per iteration when its ``by_epoch`` attribute is False,
    else per epoch, as mmengine's schedulers do.
    """

    priority = 'LOW'

    def _step(self, runner, by_epoch: bool) -> None:
        for scheduler in runner.param_schedulers or []:
            if bool(getattr(scheduler, 'by_epoch', True)) == by_epoch:
                scheduler.step()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._step(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._step(runner, by_epoch=True)


class CheckpointHook(Hook):
    """``mmengine.hooks.CheckpointHook`` (VERY_LOW), without save_best/publishing.

    Args:
        interval: period in epochs (``by_epoch``) or iterations; -1 = only the last.
        by_epoch: save from ``after_train_epoch`` or ``after_train_iter``.
        save_optimizer, save_param_scheduler: what goes into the file.
        out_dir: defaults to ``runner.work_dir``.
        max_keep_ckpts: keep only the newest N (-1: all).
        save_last: always save at the last epoch/iteration.
        filename_tmpl: defaults to ``'epoch_{}.pth'`` / ``'iter_{}.pth'``.
        save_begin: first epoch/iteration counted by ``interval``.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 save_param_scheduler: bool = True, out_dir: Optional[str] = None,
                 max_keep_ckpts: int = -1, save_last: bool = True,
                 filename_tmpl: Optional[str] = None, save_begin: int = 0, **kwargs):
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.save_param_scheduler = save_param_scheduler
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.args = kwargs
        if filename_tmpl is None:
            filename_tmpl = 'epoch_{}.pth' if by_epoch else 'iter_{}.pth'
        self.filename_tmpl = filename_tmpl
        require(save_begin >= 0, f'save_begin should not be less than 0, but got {save_begin}')
        self.save_begin = save_begin
        self.last_ckpt: Optional[str] = None
        self.keep_ckpt_ids: List[int] = []

    def before_train(self, runner) -> None:
        if self.out_dir is None:
            self.out_dir = runner.work_dir
        if self.out_dir != runner.work_dir:
            self.out_dir = osp.join(self.out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids = list(runner.message_hub.get_info('keep_ckpt_ids', []))

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval, self.save_begin) or (
                self.save_last and self.is_last_train_epoch(runner)):
            self._save_checkpoint(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.by_epoch:
            return
        if self.every_n_train_iters(runner, self.interval, self.save_begin) or (
                self.save_last and self.is_last_train_iter(runner)):
            self._save_checkpoint(runner)

    def _save_checkpoint(self, runner) -> None:
        if self.by_epoch:
            step = runner.epoch + 1
            meta = dict(epoch=step, iter=runner.iter)
        else:
            step = runner.iter + 1
            meta = dict(epoch=runner.epoch, iter=step)
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                old = osp.join(self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.pop(0)))  # type: ignore[arg-type]
                if osp.isfile(old):
                    os.remove(old)
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)  # type: ignore[arg-type]
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, **self.args)
        with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(self.last_ckpt)


_DEFAULT_HOOK_TYPES = dict(RuntimeInfoHook=RuntimeInfoHook, IterTimerHook=IterTimerHook,
                           DistSamplerSeedHook=DistSamplerSeedHook, LoggerHook=LoggerHook,
                           ParamSchedulerHook=ParamSchedulerHook, CheckpointHook=CheckpointHook)
