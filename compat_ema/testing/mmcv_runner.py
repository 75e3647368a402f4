"""Fakes of mmcv 1.6's ``EpochBasedRunner`` and ``IterBasedRunner``
(docs/runner-behaviour.md#mmcv-16-runners).

What they reproduce, call for call (docs/runner-behaviour.md#fake-runner-checklist, mmcv part):

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

import logging
import os
import os.path as osp
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.parallel import DataParallel
from torch.optim import Optimizer

from ..core.checks import require
from ..core.priority import Priority, get_priority
from ..doctor import EMASetupWarning
from ..mmcv.runner.hooks.hook import Hook
from ..registry import HOOKS
from . import mmcv_checkpoint

__all__ = ['BaseRunner', 'EpochBasedRunner', 'IterBasedRunner', 'IterLoader', 'OptimizerHook',
           'CheckpointHook', 'IterTimerHook', 'LoggerHook', 'MMDataParallel', 'LogBuffer',
           'EMASetupWarning']


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
            runner.meta['hook_msgs']['last_ckpt'] = osp.join(self.out_dir, tmpl.format(step))
        if self.max_keep_ckpts > 0:
            for old in range(step - self.max_keep_ckpts * self.interval, 0, -self.interval):
                path = osp.join(self.out_dir, tmpl.format(old))
                if not osp.isfile(path):
                    break
                os.remove(path)


_DEFAULT_LOGGER = logging.getLogger('compat_ema.testing')


class BaseRunner:
    """``mmcv.runner.BaseRunner``: state, hook registration, checkpoint load and resume.

    Args:
        model: a module with ``train_step`` (``val_step`` for val phases),
            possibly wrapped (:class:`MMDataParallel`).
        optimizer: a torch optimizer, a dict of them, or None.
        work_dir: made absolute and created.
        logger: a ``logging.Logger``; defaults to ``compat_ema.testing``
            (upstream requires one).
        meta: a dict or None.
        max_iters, max_epochs: at most one of them.
        hook_scope: registry scope for hook configs; 'mmdet' (a child of
            'mmcv') resolves both mmcv's and mmdet's names.
        warn_ema: issue :class:`EMASetupWarning` at ``run()`` when the EMA
            hooks' priority and the resume path lose EMA history
            (docs/runner-behaviour.md#resume-matrix).
    """

    def __init__(self, model: nn.Module, batch_processor: Optional[Callable] = None,
                 optimizer: Union[Dict, Optimizer, None] = None, work_dir: Optional[str] = None,
                 logger: Optional[logging.Logger] = None, meta: Optional[Dict] = None,
                 max_iters: Optional[int] = None, max_epochs: Optional[int] = None,
                 hook_scope: str = 'mmdet', warn_ema: bool = True) -> None:
        if batch_processor is not None:
            raise NotImplementedError('the harness does not support batch_processor; '
                                      'give the model train_step()/val_step()')
        require(hasattr(model, 'train_step'), f'{type(model).__name__} has no train_step(): '
                'mmcv runners call model.train_step(data_batch, optimizer)')
        if isinstance(optimizer, dict):
            for name, optim in optimizer.items():
                if not isinstance(optim, Optimizer):
                    raise TypeError(f'optimizer must be a dict of torch.optim.Optimizers, '
                                    f'but optimizer["{name}"] is a {type(optim)}')
        elif optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f'optimizer must be a torch.optim.Optimizer object or dict or None, '
                            f'but got {type(optimizer)}')
        logger = _DEFAULT_LOGGER if logger is None else logger
        if not isinstance(logger, logging.Logger):
            raise TypeError(f'logger must be a logging.Logger object, but got {type(logger)}')
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f'meta must be a dict or None, but got {type(meta)}')
        self.model = model
        self.optimizer = optimizer
        self.logger = logger
        self.meta = meta
        if isinstance(work_dir, str):
            self.work_dir: Optional[str] = osp.abspath(work_dir)
            os.makedirs(self.work_dir, exist_ok=True)
        elif work_dir is None:
            self.work_dir = None
        else:
            raise TypeError('"work_dir" must be a str or None')
        self.mode: Optional[str] = None
        self._hooks: List[Hook] = []
        self._epoch = 0
        self._iter = 0
        self._inner_iter = 0
        if max_epochs is not None and max_iters is not None:
            raise ValueError('Only one of `max_epochs` or `max_iters` can be set.')
        self._max_epochs = max_epochs
        self._max_iters = max_iters
        self.log_buffer = LogBuffer()
        self.hook_scope = hook_scope
        self.warn_ema = warn_ema
        self._resumed_from: Optional[str] = None

    # -- read-only counters ----------------------------------------------
    @property
    def hooks(self) -> List[Hook]:
        return self._hooks

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def inner_iter(self) -> int:
        return self._inner_iter

    @property
    def max_epochs(self):
        return self._max_epochs

    @property
    def max_iters(self):
        return self._max_iters

    # -- hooks ------------------------------------------------------------
    def register_hook(self, hook: Hook, priority: Union[int, str, Priority] = 'NORMAL') -> None:
        """Insert after the last hook whose priority number is <= this one (stable)."""
        require(isinstance(hook, Hook), f'hooks must be instances of compat_ema.mmcv.runner.Hook, '
                f'got {type(hook).__name__}')
        if hasattr(hook, 'priority'):
            raise ValueError('"priority" is a reserved attribute for hooks')
        priority = get_priority(priority)
        hook.priority = priority  # type: ignore[attr-defined]
        for i in range(len(self._hooks) - 1, -1, -1):
            if priority >= self._hooks[i].priority:  # type: ignore[attr-defined]
                self._hooks.insert(i + 1, hook)
                return
        self._hooks.insert(0, hook)

    def register_hook_from_cfg(self, hook_cfg: Dict) -> None:
        """Build from :data:`compat_ema.registry.HOOKS` (scope ``hook_scope``); priority from the dict."""
        cfg = dict(hook_cfg)
        priority = cfg.pop('priority', 'NORMAL')
        hook = HOOKS.build(cfg, scope=self.hook_scope)
        self.register_hook(hook, priority=priority)

    def call_hook(self, fn_name: str) -> None:
        """``getattr(hook, fn_name)(self)`` for every hook, in order (no hasattr check)."""
        for hook in self._hooks:
            getattr(hook, fn_name)(self)

    def get_hook_info(self) -> List[Tuple[str, int]]:
        """``[(class name, numeric priority), ...]`` in call order."""
        return [(type(h).__name__, h.priority) for h in self._hooks]  # type: ignore[attr-defined]

    def _register_simple(self, config: Union[Dict, Hook, None], cls: type, priority: str) -> None:
        if config is None:
            return
        if isinstance(config, dict):
            cfg = dict(config)
            kind = cfg.pop('type', cls.__name__)
            if kind != cls.__name__:
                raise KeyError(f'the harness provides only {cls.__name__} here, not {kind!r}; '
                               'pass a Hook instance instead')
            hook = cls(**cfg)
        else:
            hook = config
        self.register_hook(hook, priority=priority)

    def register_training_hooks(self, lr_config: Union[Hook, None] = None,
                                optimizer_config: Union[Dict, Hook, None] = None,
                                checkpoint_config: Union[Dict, Hook, None] = None,
                                log_config: Optional[Dict] = None,
                                momentum_config: Union[Hook, None] = None,
                                timer_config: Union[Dict, Hook, None] = dict(type='IterTimerHook'),
                                custom_hooks_config: Union[List, Dict, Hook, None] = None) -> None:
        """Default hooks in mmcv's order, then custom hooks (see the module doc)."""
        for config, prio in ((lr_config, 'VERY_HIGH'), (momentum_config, 'HIGH')):
            if config is not None:
                if not isinstance(config, Hook):
                    raise TypeError('the harness takes lr/momentum updaters as Hook instances only')
                self.register_hook(config, priority=prio)
        self._register_simple(optimizer_config, OptimizerHook, 'ABOVE_NORMAL')
        self._register_simple(checkpoint_config, CheckpointHook, 'NORMAL')
        self._register_simple(timer_config, IterTimerHook, 'LOW')
        if log_config is not None:
            for info in log_config['hooks']:
                hook = info if isinstance(info, Hook) else LoggerHook(
                    interval=log_config.get('interval', 10))
                self.register_hook(hook, priority='VERY_LOW')
        if custom_hooks_config is not None:
            items = custom_hooks_config if isinstance(custom_hooks_config, list) else [custom_hooks_config]
            for item in items:
                if isinstance(item, dict):
                    self.register_hook_from_cfg(item)
                else:
                    self.register_hook(item, priority='NORMAL')

    # -- checkpoints --------------------------------------------------------
    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: List = [(r'^module.', '')]) -> Dict:
        """Non-strict load into ``self.model`` (docs/runner-behaviour.md#mmcv-load-checkpoint)."""
        return mmcv_checkpoint.load_checkpoint(self.model, filename, map_location, strict,
                                               self.logger, revise_keys=revise_keys)

    def _resume_optimizer(self, checkpoint: Dict) -> None:
        if isinstance(self.optimizer, Optimizer):
            self.optimizer.load_state_dict(checkpoint['optimizer'])
        elif isinstance(self.optimizer, dict):
            for k in self.optimizer:
                self.optimizer[k].load_state_dict(checkpoint['optimizer'][k])
        else:
            raise TypeError('Optimizer should be dict or torch.optim.Optimizer '
                            f'but got {type(self.optimizer)}')

    def resume(self, checkpoint: str, resume_optimizer: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """``BaseRunner.resume``: epoch/iter as saved, merge hook_msgs, replace meta."""
        if map_location == 'default':
            if torch.cuda.is_available():
                device_id = torch.cuda.current_device()
                ckpt = self.load_checkpoint(
                    checkpoint, map_location=lambda storage, loc: storage.cuda(device_id))
            else:
                ckpt = self.load_checkpoint(checkpoint)
        else:
            ckpt = self.load_checkpoint(checkpoint, map_location=map_location)
        self._epoch = ckpt['meta']['epoch']
        self._iter = ckpt['meta']['iter']
        if self.meta is None:
            self.meta = {}
        self.meta.setdefault('hook_msgs', {})
        self.meta['hook_msgs'].update(ckpt['meta'].get('hook_msgs', {}))
        self.meta = ckpt['meta']
        if 'optimizer' in ckpt and resume_optimizer:
            self._resume_optimizer(ckpt)
        self._note_resume(checkpoint)
        self.logger.info('resumed epoch %d, iter %d', self.epoch, self.iter)

    def _note_resume(self, checkpoint: str) -> None:
        if self._resumed_from is None:
            self._resumed_from = checkpoint
        self._resume_calls = getattr(self, '_resume_calls', 0) + 1

    def _save(self, out_dir: str, filename_tmpl: str, step: int, save_optimizer: bool,
              meta: Optional[Dict], create_symlink: bool) -> None:
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise TypeError(f'meta should be a dict or None, but got {type(meta)}')
        if self.meta is not None:
            meta.update(self.meta)
        meta.update(epoch=self.epoch + 1, iter=self.iter)
        filename = filename_tmpl.format(step)
        filepath = osp.join(out_dir, filename)
        optimizer = self.optimizer if save_optimizer else None
        mmcv_checkpoint.save_checkpoint(self.model, filepath, optimizer=optimizer, meta=meta)
        if create_symlink:
            mmcv_checkpoint.symlink(filename, osp.join(out_dir, 'latest.pth'))

    def _warn_ema_setup(self) -> None:
        if not self.warn_ema:
            return
        from ..doctor import diagnose_runner
        for finding in diagnose_runner(self):
            warnings.warn(finding.message, EMASetupWarning, stacklevel=3)

    def _run_iter_outputs(self, outputs: Any) -> None:
        if not isinstance(outputs, dict):
            raise TypeError('model.train_step() and model.val_step() must return a dict')
        if 'log_vars' in outputs:
            self.log_buffer.update(outputs['log_vars'], outputs['num_samples'])
        self.outputs = outputs


class EpochBasedRunner(BaseRunner):
    """``mmcv.runner.EpochBasedRunner`` (docs/runner-behaviour.md#mmcv-epoch-runner,
    #mmcv-workflows)."""

    def train(self, data_loader: Sequence, **kwargs) -> None:
        self.model.train()
        self.mode = 'train'
        self.data_loader = data_loader
        self._max_iters = self._max_epochs * len(self.data_loader)
        self.call_hook('before_train_epoch')
        for i, data_batch in enumerate(self.data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook('before_train_iter')
            self._run_iter_outputs(self.model.train_step(data_batch, self.optimizer, **kwargs))
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
            self._run_iter_outputs(self.model.val_step(data_batch, self.optimizer, **kwargs))
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
                self._max_iters = self._max_epochs * len(data_loaders[i])
                break
        self._warn_ema_setup()
        self.call_hook('before_run')
        while self.epoch < self._max_epochs:
            for i, (mode, epochs) in enumerate(workflow):
                if not isinstance(mode, str):
                    raise TypeError(f'mode in workflow must be a str, but got {type(mode)}')
                if not hasattr(self, mode):
                    raise ValueError(f'runner has no method named "{mode}" to run an epoch')
                epoch_runner = getattr(self, mode)
                for _ in range(epochs):
                    if mode == 'train' and self.epoch >= self._max_epochs:
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
        outputs = self.model.train_step(data_batch, self.optimizer, **kwargs)
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
        outputs = self.model.val_step(data_batch, **kwargs)
        if not isinstance(outputs, dict):
            raise TypeError('model.val_step() must return a dict')
        self._run_iter_outputs(outputs)
        self.call_hook('after_val_iter')
        del self.data_batch
        self._inner_iter += 1

    def run(self, data_loaders: List, workflow: List[Tuple[str, int]],
            max_iters: Optional[int] = None, **kwargs) -> None:
        """``before_run``, ``before_epoch``, the workflow until ``iter >= max_iters``, ``after_epoch``, ``after_run``."""
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
        while self.iter < self._max_iters:
            for i, (mode, iters) in enumerate(workflow):
                self._inner_iter = 0
                if not isinstance(mode, str) or not hasattr(self, mode):
                    raise ValueError(f'runner has no method named "{mode}" to run a workflow')
                iter_runner = getattr(self, mode)
                for _ in range(iters):
                    if mode == 'train' and self.iter >= self._max_iters:
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

    def register_training_hooks(self, lr_config=None, optimizer_config=None,
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
