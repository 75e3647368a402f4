"""Fakes of mmcv 1.6's ``EpochBasedRunner`` and ``IterBasedRunner``
(docs/runner-behaviour.md#mmcv-16-runners).

What they reproduce, call for call (see docs/runner-behaviour.md, mmcv part):

* counters: ``iter``/``epoch``/``inner_iter`` are read-only views of private
  fields; the epoch runner sets ``inner_iter = i`` before ``before_train_iter``,
  ``iter += 1`` after ``after_train_iter``, ``epoch += 1`` after
  ``after_train_epoch``; the iter runner reads ``epoch`` from the loader's
  wrap count *before* fetching and resets ``inner_iter`` per workflow phase;
* method names: the iter runner calls only ``before_epoch``/``after_epoch`` at
  epoch level (so the EMA hooks never swap there, mmcv#2195);
* workflows: only train phases check the maximum, so val phases run after the
  last train phase too; ``[('val', 1), ('train', 1)]`` validates at iter 0;
* ``register_hook``: stable insertion by numeric priority, ``ValueError`` on
  a hook that already has ``priority``; ``register_training_hooks`` order
  lr (10), momentum (30), optimizer (40), checkpoint (50), timer (70),
  loggers (90), then custom hooks (dict priority, default NORMAL);
* the optimizer step happens in :class:`OptimizerHook.after_train_iter` (40);
* ``save_checkpoint``: meta ``epoch = epoch + 1``, ``iter = iter`` (no +1,
  even in the iter runner), files ``epoch_N.pth``/``iter_N.pth`` and a
  ``latest.pth`` symlink; :class:`CheckpointHook` writes
  ``meta['hook_msgs']['last_ckpt']`` *after* saving;
* ``resume``: epoch runner sets epoch/iter as saved, merges ``hook_msgs`` and
  replaces ``runner.meta``; iter runner also sets ``inner_iter``, leaves meta
  alone, and with ``map_location='default'`` calls
  ``torch.cuda.current_device()`` (so it fails on a CPU-only machine, as
  upstream); its data loader is not fast-forwarded and, because the saved
  ``iter`` is completed - 1, one iteration is repeated.

Not reproduced: ``batch_processor``, distributed training, lr/momentum
updater configs (pass Hook instances instead), logger output.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..core.checks import require
from ..doctor import EMASetupWarning
from .mmcv_base_runner import BaseRunner
from .mmcv_hooks import (
    CheckpointHook,
    IterTimerHook,
    LogBuffer,
    LoggerHook,
    MMDataParallel,
    OptimizerHook,
)

__all__ = ['BaseRunner', 'EpochBasedRunner', 'IterBasedRunner', 'IterLoader', 'OptimizerHook',
           'CheckpointHook', 'IterTimerHook', 'LoggerHook', 'MMDataParallel', 'LogBuffer',
           'EMASetupWarning']


class EpochBasedRunner(BaseRunner):
    """``mmcv.runner.EpochBasedRunner`` (docs/runner-behaviour.md)."""

    def train(self, data_loader: Sequence, **kwargs) -> None:
        self.model.train()
        self.mode = 'train'
        self.data_loader = data_loader
        self._max_iters = self._max_epochs * len(self.data_loader)  # type: ignore[operator]
        self.call_hook('before_train_epoch')
        for i, data_batch in enumerate(self.data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook('before_train_iter')
            self._run_iter_outputs(self.model.train_step(data_batch, self.optimizer, **kwargs))  # type: ignore[operator]
            self.call_hook('after_train_iter')
            del self.data_batch
            self._iter += 1
        self.call_hook('after_train_epoch')
        self._epoch += 1

    @torch.no_grad()
    def val(self, data_loader: Sequence, **kwargs) -> None:
        self.model.eval()
        self.mode = 'val'
        self.data_loader = data_loader
        self.call_hook('before_val_epoch')
        for i, data_batch in enumerate(self.data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook('before_val_iter')
            self._run_iter_outputs(self.model.val_step(data_batch, self.optimizer, **kwargs))  # type: ignore[operator]
            self.call_hook('after_val_iter')
            del self.data_batch
        self.call_hook('after_val_epoch')

    def run(self, data_loaders: List, workflow: List[Tuple[str, int]],
            max_epochs: Optional[int] = None, **kwargs) -> None:
        """Walk the workflow until ``epoch >= max_epochs``; val phases never check it."""
        require(isinstance(data_loaders, list), 'data_loaders must be a list')
        require(all(isinstance(f, tuple) for f in workflow), 'workflow must be a list of tuples')
        require(len(data_loaders) == len(workflow),
                f'{len(data_loaders)} data loaders for {len(workflow)} workflow entries')
        if max_epochs is not None:
            warnings.warn('setting max_epochs in run is deprecated, please set max_epochs in '
                          'runner_config', DeprecationWarning)
            self._max_epochs = max_epochs
        require(self._max_epochs is not None, 'max_epochs must be specified during instantiation')
        for i, (mode, _) in enumerate(workflow):
            if mode == 'train':
                self._max_iters = self._max_epochs * len(data_loaders[i])  # type: ignore[operator]
                break
        self._warn_ema_setup()
        self.call_hook('before_run')
        while self.epoch < self._max_epochs:  # type: ignore[operator]
            for i, (mode, epochs) in enumerate(workflow):
                if not isinstance(mode, str):
                    raise TypeError(f'mode in workflow must be a str, but got {type(mode)}')
                if not hasattr(self, mode):
                    raise ValueError(f'runner has no method named "{mode}" to run an epoch')
                epoch_runner = getattr(self, mode)
                for _ in range(epochs):
                    if mode == 'train' and self.epoch >= self._max_epochs:  # type: ignore[operator]
                        break
                    epoch_runner(data_loaders[i], **kwargs)
        self.call_hook('after_run')

    def save_checkpoint(self, out_dir: str, filename_tmpl: str = 'epoch_{}.pth',
                        save_optimizer: bool = True, meta: Optional[Dict] = None,
                        create_symlink: bool = True) -> None:
        """meta ``epoch = epoch + 1``, ``iter = iter``; file ``epoch_{epoch+1}.pth``."""
        self._save(out_dir, filename_tmpl, self.epoch + 1, save_optimizer, meta, create_symlink)


class IterLoader:
    """``mmcv.runner.IterLoader``: an endless iterator counting wrap-arounds in ``epoch``.

    It reads ``loader.sampler`` when it wraps around, so a plain list fails
    there with AttributeError, as upstream (use a DataLoader or
    :class:`compat_ema.testing.models.ListLoader`).
    """

    def __init__(self, dataloader):
        self._dataloader = dataloader
        self.iter_loader = iter(self._dataloader)
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def __next__(self):
        try:
            return next(self.iter_loader)
        except StopIteration:
            self._epoch += 1
            if hasattr(self._dataloader.sampler, 'set_epoch'):
                self._dataloader.sampler.set_epoch(self._epoch)
            self.iter_loader = iter(self._dataloader)
            return next(self.iter_loader)

    def __len__(self) -> int:
        return len(self._dataloader)


class IterBasedRunner(BaseRunner):
    """``mmcv.runner.IterBasedRunner`` (docs/runner-behaviour.md#mmcv-iter-runner, #mmcv-resume)."""

    def train(self, data_loader: IterLoader, **kwargs) -> None:
        self.model.train()
        self.mode = 'train'
        self.data_loader = data_loader
        self._epoch = data_loader.epoch
        data_batch = next(data_loader)
        self.data_batch = data_batch
        self.call_hook('before_train_iter')
        outputs = self.model.train_step(data_batch, self.optimizer, **kwargs)  # type: ignore[operator]
        if not isinstance(outputs, dict):
            raise TypeError('model.train_step() must return a dict')
        self._run_iter_outputs(outputs)
        self.call_hook('after_train_iter')
        del self.data_batch
        self._inner_iter += 1
        self._iter += 1

    @torch.no_grad()
    def val(self, data_loader: IterLoader, **kwargs) -> None:
        self.model.eval()
        self.mode = 'val'
        self.data_loader = data_loader
        data_batch = next(data_loader)
        self.data_batch = data_batch
        self.call_hook('before_val_iter')
        outputs = self.model.val_step(data_batch, **kwargs)  # type: ignore[operator]
        if not isinstance(outputs, dict):
            raise TypeError('model.val_step() must return a dict')
        self._run_iter_outputs(outputs)
        self.call_hook('after_val_iter')
        del self.data_batch
        self._inner_iter += 1

    def run(self, data_loaders: List, workflow: List[Tuple[str, int]],
            max_iters: Optional[int] = None, **kwargs) -> None:
        """``before_run``, ``before_epoch``, the workflow until ``iter >= max_iters``, ``after_epoch``,
        ``after_run``."""
        require(isinstance(data_loaders, list), 'data_loaders must be a list')
        require(all(isinstance(f, tuple) for f in workflow), 'workflow must be a list of tuples')
        require(len(data_loaders) == len(workflow),
                f'{len(data_loaders)} data loaders for {len(workflow)} workflow entries')
        if max_iters is not None:
            warnings.warn('setting max_iters in run is deprecated, please set max_iters in '
                          'runner_config', DeprecationWarning)
            self._max_iters = max_iters
        require(self._max_iters is not None, 'max_iters must be specified during instantiation')
        self._warn_ema_setup()
        self.call_hook('before_run')
        iter_loaders = [IterLoader(x) for x in data_loaders]
        self.call_hook('before_epoch')
        while self.iter < self._max_iters:  # type: ignore[operator]
            for i, (mode, iters) in enumerate(workflow):
                self._inner_iter = 0
                if not isinstance(mode, str) or not hasattr(self, mode):
                    raise ValueError(f'runner has no method named "{mode}" to run a workflow')
                iter_runner = getattr(self, mode)
                for _ in range(iters):
                    if mode == 'train' and self.iter >= self._max_iters:  # type: ignore[operator]
                        break
                    iter_runner(iter_loaders[i], **kwargs)
        self.call_hook('after_epoch')
        self.call_hook('after_run')

    def resume(self, checkpoint: str, resume_optimizer: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """``IterBasedRunner.resume``: also sets ``inner_iter``; keeps ``runner.meta``.

        ``map_location='default'`` calls ``torch.cuda.current_device()``
        unconditionally, as upstream: on a CPU-only machine it raises.
        """
        if map_location == 'default':
            device_id = torch.cuda.current_device()
            ckpt = self.load_checkpoint(
                checkpoint, map_location=lambda storage, loc: storage.cuda(device_id))
        else:
            ckpt = self.load_checkpoint(checkpoint, map_location=map_location)
        self._epoch = ckpt['meta']['epoch']
        self._iter = ckpt['meta']['iter']
        self._inner_iter = ckpt['meta']['iter']
        if 'optimizer' in ckpt and resume_optimizer:
            self._resume_optimizer(ckpt)
        self._note_resume(checkpoint)
        self.logger.info(f'resumed from epoch: {self.epoch}, iter {self.iter}')

    def save_checkpoint(self, out_dir: str, filename_tmpl: str = 'iter_{}.pth',
                        meta: Optional[Dict] = None, save_optimizer: bool = True,
                        create_symlink: bool = True) -> None:
        """meta ``epoch = epoch + 1``, ``iter = iter`` (completed - 1); file ``iter_{iter+1}.pth``."""
        self._save(out_dir, filename_tmpl, self.iter + 1, save_optimizer, meta, create_symlink)

    def register_training_hooks(self, lr_config=None, optimizer_config=None,  # type: ignore[override]
                                checkpoint_config=None, log_config=None, momentum_config=None,
                                custom_hooks_config=None, **kwargs) -> None:
        """As the base, with ``by_epoch=False`` defaults and an ``IterTimerHook`` instance."""
        if isinstance(checkpoint_config, dict):
            checkpoint_config = dict(checkpoint_config)
            checkpoint_config.setdefault('by_epoch', False)
        super().register_training_hooks(
            lr_config=lr_config, momentum_config=momentum_config,
            optimizer_config=optimizer_config, checkpoint_config=checkpoint_config,
            log_config=log_config, timer_config=IterTimerHook(),
            custom_hooks_config=custom_hooks_config)
