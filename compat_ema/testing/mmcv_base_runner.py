"""A fake of mmcv 1.6's ``BaseRunner`` (upstream: ``mmcv/runner/base_runner.py``): state,
hook registration, checkpoint load, resume and save.

Part of the mmcv runner harness (:mod:`compat_ema.testing.mmcv_runner`, which re-exports
it); see that module for what is reproduced.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..core.checks import require
from ..core.priority import Priority, get_priority
from ..doctor import EMASetupWarning
from ..mmcv.runner import checkpoint as mmcv_checkpoint
from ..mmcv.runner.hooks.hook import Hook
from ..registry import HOOKS
from .mmcv_hooks import (
    CheckpointHook,
    IterTimerHook,
    LogBuffer,
    LoggerHook,
    OptimizerHook,
)

__all__ = ['BaseRunner']


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
            hooks' priority and the resume path lose EMA history (docs/runner-behaviour.md).
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
        """Non-strict load into ``self.model`` (docs/runner-behaviour.md)."""
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
