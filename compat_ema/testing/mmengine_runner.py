"""A fake of mmengine 0.10.7's ``Runner`` and loops
(docs/runner-behaviour.md#mmengine-0107-runner-and-loops).

What it reproduces (see docs/runner-behaviour.md, mmengine part):

* entry points: ``train()`` builds the loops and the optim wrapper, fires
  ``before_run``, then ``load_or_resume()``, the loop, ``after_run``;
  ``val()`` and ``test()`` fire ``before_run`` too (so ``train()`` then
  ``test()`` on one runner rebuilds the EMA model from the raw weights);
* :class:`EpochBasedTrainLoop`, :class:`IterBasedTrainLoop` (``batch_idx ==
  runner.iter``, epoch always 0, one ``before/after_train_epoch``, consumed
  batches skipped after a resume), :class:`ValLoop`, :class:`TestLoop`, with
  the val schedule ``epoch/iter >= val_begin and (x % val_interval == 0 or
  x == max)``;
* hook dispatch with ``hasattr`` and keyword arguments, stable priorities;
  default hooks RuntimeInfoHook (VERY_HIGH), IterTimerHook, DistSamplerSeedHook
  (NORMAL), LoggerHook (BELOW_NORMAL), ParamSchedulerHook (LOW),
  CheckpointHook (VERY_LOW, interval 1), then custom hooks;
* :class:`CheckpointHook` and ``save_checkpoint``: meta ``epoch+1, iter``
  (by epoch) or ``epoch, iter+1`` (by iter); keys ``meta, state_dict,
  message_hub, optimizer[, param_schedulers]``; ``before_save_checkpoint``
  before the (atomic) write, so ``ema_state_dict`` comes last; tensors alias
  the live model on the CPU; ``work_dir/last_checkpoint``;
* ``load_checkpoint``: ``after_load_checkpoint`` *before* the model loads
  ``state_dict`` (``^module.`` stripped, non-strict); ``resume`` sets the train
  loop's ``_epoch``/``_iter`` exactly as saved; ``load_or_resume`` with
  ``resume``/``load_from`` and auto-resume from ``last_checkpoint``.

Deviations: no config/registry building of models or datasets (pass objects);
the message hub is a plain dict, so the harness's checkpoints load under
torch's ``weights_only=True`` (the real 0.10.7 ones do not on torch >= 2.6).
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ..core.checks import require
from ..core.priority import get_priority
from ..core.state_dict import load_state_dict
from ..core.wrappers import is_wrapper, unwrap
from ..mmcv.runner.checkpoint import atomic_torch_save
from ..mmengine.hooks.hook import Hook
from ..registry import HOOKS
from .mmengine_hooks import (
    MMENGINE_VERSION,
    CheckpointHook,
    DistSamplerSeedHook,
    IterTimerHook,
    LoggerHook,
    MessageHub,
    OptimWrapper,
    ParamSchedulerHook,
    RuntimeInfoHook,
)
from .mmengine_loops import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop

__all__ = ['Runner', 'OptimWrapper', 'MessageHub', 'EpochBasedTrainLoop', 'IterBasedTrainLoop',
           'ValLoop', 'TestLoop', 'RuntimeInfoHook', 'IterTimerHook', 'DistSamplerSeedHook',
           'LoggerHook', 'ParamSchedulerHook', 'CheckpointHook', 'MMENGINE_VERSION']


_DEFAULT_HOOK_TYPES = dict(RuntimeInfoHook=RuntimeInfoHook, IterTimerHook=IterTimerHook,
                           DistSamplerSeedHook=DistSamplerSeedHook, LoggerHook=LoggerHook,
                           ParamSchedulerHook=ParamSchedulerHook, CheckpointHook=CheckpointHook)


# -- the runner ----------------------------------------------------------------

_DEFAULT_LOGGER = logging.getLogger('compat_ema.testing')


def _build_optimizer(cfg: Union[dict, Optimizer, OptimWrapper], model: nn.Module) -> OptimWrapper:
    if isinstance(cfg, OptimWrapper):
        return cfg
    if isinstance(cfg, Optimizer):
        return OptimWrapper(cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f'optim_wrapper must be a dict, an Optimizer or an OptimWrapper, got {cfg!r}')
    opt_cfg = dict(cfg['optimizer']) if 'optimizer' in cfg else dict(cfg)
    kind = opt_cfg.pop('type')
    opt_cls = getattr(torch.optim, kind, None)
    if opt_cls is None:
        raise KeyError(f'unknown optimizer type {kind!r} (torch.optim has no such class)')
    return OptimWrapper(opt_cls(unwrap(model, 'mmengine').parameters(), **opt_cfg))


class Runner:
    """A fake ``mmengine.runner.Runner`` that drives hooks exactly as 0.10.7 does.

    Args:
        model: a module with ``train_step(data, optim_wrapper=)`` (stepping the
            optimizer inside), ``val_step``/``test_step``; wrappers are unwrapped
            for checkpoints.
        work_dir: created if missing.
        train_dataloader, val_dataloader, test_dataloader: iterables of batches.
        train_cfg: ``dict(by_epoch=True, max_epochs=N, val_interval=1, val_begin=1)``
            or ``dict(by_epoch=False, max_iters=N, ...)`` (or ``type='EpochBasedTrainLoop'``
            / ``'IterBasedTrainLoop'``).
        val_cfg, test_cfg: ``dict()`` to enable the loops (need the data loaders).
        val_evaluator, test_evaluator: ``outputs_list -> metrics dict``, or None.
        optim_wrapper: ``dict(optimizer=dict(type='SGD', lr=...))``, an optimizer or an OptimWrapper.
        param_scheduler: objects with ``step()``/``state_dict()``/``load_state_dict()``, or None.
        default_hooks: name -> config/Hook/None, merged into the defaults as upstream.
        custom_hooks: hook configs (built from :data:`compat_ema.registry.HOOKS`, scope
            ``hook_scope``) or Hook instances.
        load_from, resume: as upstream (``resume=True`` without ``load_from`` auto-resumes
            from ``work_dir/last_checkpoint``).
        seed: written into checkpoint meta.
        warn_ema: warn (``EMASetupWarning``) on ``test()`` after ``train()`` with an EMA hook.
    """

    def __init__(self, model: nn.Module, work_dir: str, train_dataloader: Optional[Iterable] = None,
                 val_dataloader: Optional[Iterable] = None, test_dataloader: Optional[Iterable] = None,
                 train_cfg: Optional[dict] = None, val_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, val_evaluator: Optional[Callable] = None,
                 test_evaluator: Optional[Callable] = None,
                 optim_wrapper: Union[dict, Optimizer, OptimWrapper, None] = None,
                 param_scheduler: Optional[List[Any]] = None,
                 default_hooks: Optional[Dict[str, Any]] = None,
                 custom_hooks: Optional[List[Any]] = None, load_from: Optional[str] = None,
                 resume: bool = False, seed: Optional[int] = None,
                 logger: Optional[logging.Logger] = None, hook_scope: str = 'mmengine',
                 experiment_name: str = 'harness', warn_ema: bool = True):
        self.model = model
        self.work_dir = osp.abspath(work_dir)
        os.makedirs(self.work_dir, exist_ok=True)
        for name, loader, cfg in (('train', train_dataloader, train_cfg),
                                  ('val', val_dataloader, val_cfg),
                                  ('test', test_dataloader, test_cfg)):
            if (loader is None) != (cfg is None):
                raise ValueError(f'{name}_dataloader and {name}_cfg should be either all None '
                                 f'or not None, but got {name}_dataloader={loader!r}, '
                                 f'{name}_cfg={cfg!r}')
        if train_cfg is not None and optim_wrapper is None:
            raise ValueError('optim_wrapper should not be None when train_cfg is given')
        self.train_dataloader = train_dataloader
        self.val_dataloader = val_dataloader
        self.test_dataloader = test_dataloader
        self._train_loop: Any = train_cfg
        self._val_loop: Any = val_cfg
        self._test_loop: Any = test_cfg
        self.val_evaluator = val_evaluator
        self.test_evaluator = test_evaluator
        self.optim_wrapper: Any = optim_wrapper
        self.param_schedulers = param_scheduler
        self._load_from = load_from
        self._resume = resume
        self._has_loaded = False
        self.seed = seed
        self.experiment_name = experiment_name
        self.logger = _DEFAULT_LOGGER if logger is None else logger
        self.hook_scope = hook_scope
        self.warn_ema = warn_ema
        self._trained = False
        self.message_hub = MessageHub()
        self._hooks: List[Hook] = []
        self.register_default_hooks(default_hooks)
        for hook in custom_hooks or []:
            self.register_hook(hook)

    # -- properties ---------------------------------------------------------
    @property
    def hooks(self) -> List[Hook]:
        return self._hooks

    @property
    def train_loop(self):
        if self._train_loop is None:
            return None
        if isinstance(self._train_loop, dict):
            self._train_loop = self.build_train_loop(self._train_loop)
        return self._train_loop

    @property
    def val_loop(self):
        if isinstance(self._val_loop, dict):
            self._val_loop = ValLoop(self, self.val_dataloader, self.val_evaluator)
        return self._val_loop

    @property
    def test_loop(self):
        if isinstance(self._test_loop, dict):
            self._test_loop = TestLoop(self, self.test_dataloader, self.test_evaluator)
        return self._test_loop

    @property
    def epoch(self) -> int:
        return 0 if self.train_loop is None else self.train_loop.epoch

    @property
    def iter(self) -> int:
        return 0 if self.train_loop is None else self.train_loop.iter

    @property
    def max_epochs(self) -> int:
        return 0 if self.train_loop is None else self.train_loop.max_epochs

    @property
    def max_iters(self) -> int:
        return 0 if self.train_loop is None else self.train_loop.max_iters

    def build_train_loop(self, cfg: dict):
        cfg = dict(cfg)
        kind = cfg.pop('type', None)
        by_epoch = cfg.pop('by_epoch', None)
        if kind is None:
            kind = 'EpochBasedTrainLoop' if by_epoch in (None, True) else 'IterBasedTrainLoop'
        loops = dict(EpochBasedTrainLoop=EpochBasedTrainLoop, IterBasedTrainLoop=IterBasedTrainLoop)
        if kind not in loops:
            raise KeyError(f'unknown train loop {kind!r}; known: {sorted(loops)}')
        return loops[kind](self, self.train_dataloader, **cfg)  # type: ignore[call-arg]

    # -- hooks --------------------------------------------------------------
    def register_hook(self, hook: Union[Hook, Dict], priority: Any = None) -> None:
        """Stable insertion; priority from the argument, then the dict, then ``hook.priority``."""
        if not isinstance(hook, (Hook, dict)):
            raise TypeError(f'hook should be an instance of Hook or dict, but got {hook}')
        _priority = None
        if isinstance(hook, dict):
            cfg = dict(hook)
            _priority = cfg.pop('priority', None)
            if cfg.get('type') in _DEFAULT_HOOK_TYPES:
                kind = cfg.pop('type')
                hook_obj = _DEFAULT_HOOK_TYPES[kind](**cfg)
            else:
                hook_obj = HOOKS.build(cfg, scope=self.hook_scope)
        else:
            hook_obj = hook
        if priority is not None:
            hook_obj.priority = priority
        elif _priority is not None:
            hook_obj.priority = _priority
        for i in range(len(self._hooks) - 1, -1, -1):
            if get_priority(hook_obj.priority) >= get_priority(self._hooks[i].priority):
                self._hooks.insert(i + 1, hook_obj)
                return
        self._hooks.insert(0, hook_obj)

    def register_default_hooks(self, hooks: Optional[Dict[str, Any]] = None) -> None:
        """The six default hooks, merged with ``hooks`` (None removes one)."""
        defaults: Dict[str, Any] = dict(
            runtime_info=dict(type='RuntimeInfoHook'), timer=dict(type='IterTimerHook'),
            sampler_seed=dict(type='DistSamplerSeedHook'), logger=dict(type='LoggerHook'),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', interval=1))
        for name, hook in (hooks or {}).items():
            if name in defaults and hook is None:
                defaults.pop(name)
            else:
                require(hook is not None, f'default hook {name!r} is None but is not a default')
                defaults[name] = hook
        for hook in defaults.values():
            self.register_hook(hook)

    def call_hook(self, fn_name: str, **kwargs) -> None:
        """Call ``fn_name`` on every hook that has it (runner positional, the rest as keywords)."""
        for hook in self._hooks:
            if hasattr(hook, fn_name):
                try:
                    getattr(hook, fn_name)(self, **kwargs)
                except TypeError as e:
                    raise TypeError(f'{e} in {hook}') from None

    def get_hook_info(self) -> List[tuple]:
        """``[(class name, numeric priority), ...]`` in call order."""
        return [(type(h).__name__, get_priority(h.priority)) for h in self._hooks]

    # -- entry points ---------------------------------------------------------
    def _ori_model(self) -> nn.Module:
        return self.model.module if is_wrapper(self.model, 'mmengine') else self.model  # type: ignore[return-value]

    def train(self) -> nn.Module:
        """``before_run``, ``load_or_resume``, the train loop, ``after_run``."""
        ori = self._ori_model()
        require(hasattr(ori, 'train_step'), 'If you want to train your model, please make sure '
                'your model has implemented `train_step`.')
        if self._val_loop is not None:
            require(hasattr(ori, 'val_step'), 'If you want to validate your model, please make '
                    'sure your model has implemented `val_step`.')
        if self._train_loop is None:
            raise RuntimeError('`self._train_loop` should not be None when calling train method.')
        loop = self.train_loop
        self.optim_wrapper = _build_optimizer(self.optim_wrapper, self.model)
        _ = self.val_loop
        self.call_hook('before_run')
        self.load_or_resume()
        self.optim_wrapper.initialize_count_status(self.model, loop.iter, loop.max_iters)
        model = loop.run()
        self.call_hook('after_run')
        self._trained = True
        return model

    def val(self) -> dict:
        """``before_run``, ``load_or_resume``, the val loop, ``after_run``."""
        return self._evaluate('val')

    def test(self) -> dict:
        """``before_run``, ``load_or_resume``, the test loop, ``after_run``.

        After ``train()`` on the same runner with an EMA hook, issues an
        ``EMASetupWarning`` (doctor E202): ``before_run`` rebuilds the EMA model
        from the raw weights, as upstream does (numbers unchanged).
        """
        if self._trained and self.warn_ema and any(hasattr(h, 'ema_cfg') for h in self._hooks):
            from ..doctor import diagnose
            from .mmcv_runner import EMASetupWarning
            for f in diagnose(dict(custom_hooks=[dict(type='EMAHook', ema_type='?')],
                                   test_after_train=True)):
                warnings.warn(f.message, EMASetupWarning, stacklevel=2)
        return self._evaluate('test')

    def _evaluate(self, mode: str) -> dict:
        """What ``val()`` and ``test()`` share: the loop between ``before_run`` and ``after_run``."""
        if getattr(self, f'_{mode}_loop') is None:
            raise RuntimeError(f'`self._{mode}_loop` should not be None when calling {mode} method.')
        loop = getattr(self, f'{mode}_loop')
        self.call_hook('before_run')
        self.load_or_resume()
        metrics = loop.run()
        self.call_hook('after_run')
        return metrics

    # -- checkpoints ------------------------------------------------------------
    def load_or_resume(self) -> None:
        """Once per runner: resume (explicit or auto) or load weights
        (docs/runner-behaviour.md#mmengine-resume)."""
        if self._has_loaded:
            return
        resume_from = None
        if self._resume and self._load_from is None:
            resume_from = find_latest_checkpoint(self.work_dir)
        elif self._resume and self._load_from is not None:
            resume_from = self._load_from
        if resume_from is not None:
            self.resume(resume_from)
            self._has_loaded = True
        elif self._load_from is not None:
            self.load_checkpoint(self._load_from)
            self._has_loaded = True

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False, revise_keys: list = [(r'^module.', '')]) -> dict:
        """``torch.load``, then ``after_load_checkpoint``, then the model loads ``state_dict``."""
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        checkpoint = torch.load(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self._ori_model()
        state_dict = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
        metadata = getattr(state_dict, '_metadata', None)
        for pattern, repl in revise_keys:
            state_dict = type(state_dict)((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
        if metadata is not None:
            state_dict._metadata = metadata
        load_state_dict(model, state_dict, strict=strict, generation='mmengine', logger=self.logger)
        self._has_loaded = True
        return checkpoint

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """Load, then set the train loop's epoch/iter exactly as saved; optimizer, schedulers."""
        if map_location == 'default':
            map_location = 'cuda' if torch.cuda.is_available() else 'cpu'
        checkpoint = self.load_checkpoint(filename, map_location=map_location)
        self.train_loop._epoch = checkpoint['meta']['epoch']
        self.train_loop._iter = checkpoint['meta']['iter']
        resumed_seed = checkpoint['meta'].get('seed', None)
        if resumed_seed is not None and resumed_seed != self.seed:
            self.seed = resumed_seed
        self.message_hub.load_state_dict(checkpoint.get('message_hub', {}))
        if 'optimizer' in checkpoint and resume_optimizer:
            self.optim_wrapper = _build_optimizer(self.optim_wrapper, self.model)
            self.optim_wrapper.load_state_dict(checkpoint['optimizer'])
        if resume_param_scheduler and self.param_schedulers is None:
            resume_param_scheduler = False
        if 'param_schedulers' in checkpoint and resume_param_scheduler:
            for scheduler, state in zip(self.param_schedulers, checkpoint['param_schedulers']):  # type: ignore[arg-type]
                scheduler.load_state_dict(state)
        self._has_loaded = True
        self.logger.info(f'resumed epoch: {self.epoch}, iter: {self.iter}')

    def save_checkpoint(self, out_dir: str, filename: str, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, **kwargs) -> Dict[str, Any]:
        """Assemble the dict, call ``before_save_checkpoint``, then write it atomically."""
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise TypeError(f'meta should be a dict or None, but got {type(meta)}')
        if by_epoch:
            meta.setdefault('epoch', self.epoch + 1)
            meta.setdefault('iter', self.iter)
        else:
            meta.setdefault('epoch', self.epoch)
            meta.setdefault('iter', self.iter + 1)
        meta.update(cfg='', seed=self.seed, experiment_name=self.experiment_name,
                    time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    mmengine_version=MMENGINE_VERSION)
        model = self._ori_model()
        state = model.state_dict()
        cpu_state = type(state)((k, v.cpu()) for k, v in state.items())
        cpu_state._metadata = getattr(state, '_metadata', None)  # type: ignore[attr-defined]
        checkpoint: Dict[str, Any] = {'meta': meta, 'state_dict': cpu_state,
                                      'message_hub': self.message_hub.state_dict()}
        if save_optimizer:
            if not isinstance(self.optim_wrapper, OptimWrapper):
                raise TypeError('self.optim_wrapper should be an `OptimWrapper` instance, '
                                f'but got {self.optim_wrapper}')
            checkpoint['optimizer'] = self.optim_wrapper.state_dict()
        if save_param_scheduler and self.param_schedulers is None:
            save_param_scheduler = False
        if save_param_scheduler:
            checkpoint['param_schedulers'] = [s.state_dict() for s in self.param_schedulers]  # type: ignore[union-attr]
        self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        atomic_torch_save(checkpoint, osp.join(out_dir, filename))
        return checkpoint


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The path written in ``path/last_checkpoint``, or None if that file is missing."""
    save_file = osp.join(path, 'last_checkpoint')
    if not osp.exists(save_file):
        return None
    with open(save_file) as f:
        return f.read().strip()
