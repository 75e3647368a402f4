"""``mmengine.hooks.EMAHook`` (mmengine 0.10.7), reproduced bit for bit.

Quirks carried (docs/upstream-quirks.md quirks 11-14; docs/runner-behaviour.md#mmengine-emahook):

* ``before_run`` builds the averaged model (``ema_type``, default
  ``ExponentialMovingAverage``) from :data:`compat_ema.registry.MODELS`; every
  runner entry point fires ``before_run``, so ``train()`` then ``test()`` on one
  runner rebuilds it from the raw weights.
* EMA starts when ``iter + 1 >= begin_iter`` (or ``epoch + 1 >= begin_epoch``);
  before that the EMA copy is overwritten with the source every iteration,
  and ``begin_epoch=1`` behaves like 0.
* swaps happen around val and test epochs only, never at train-epoch
  boundaries: after ``train()`` the model holds the raw weights.
* ``before_save_checkpoint`` adds ``ema_state_dict`` (``steps`` first, then
  ``module.*``) and swaps the *dict values*, so ``state_dict`` holds the EMA
  weights and ``ema_state_dict`` the raw ones.
* ``after_load_checkpoint`` swaps them back and loads the EMA state only when
  resuming (``runner._resume``) and ``ema_state_dict`` exists; otherwise it
  loads a copy of ``state_dict`` (the EMA weights) into the EMA module, steps
  staying 0, and the model receives the EMA weights too.
"""
from __future__ import annotations

import copy
import itertools
import logging
from typing import Dict, Optional

from ..._compat_registry import MMENGINE_HOOKS
from ...core import kernels
from ...core.checks import require
from ...core.state_dict import load_state_dict
from ...core.structure import ModuleSnapshot
from ...core.wrappers import unwrap
from ...registry import MODELS, current_scope, in_subtree
from .hook import Hook

_LOG = logging.getLogger('compat_ema.mmengine')


@MMENGINE_HOOKS.register_module()
class EMAHook(Hook):
    """``mmengine.hooks.EMAHook``: keeps an averaged copy of the model.

    Args:
        ema_type: registered averaged-model type. Defaults to 'ExponentialMovingAverage'.
        strict_load: strict loading of EMA state from checkpoints. Defaults to False.
        begin_iter: iteration at which EMA starts. Defaults to 0.
        begin_epoch: epoch at which EMA starts. Defaults to 0.
        **kwargs: arguments of the averaged model (momentum, interval, update_buffers, ...).
    """

    priority = 'NORMAL'

    def __init__(self, ema_type: str = 'ExponentialMovingAverage', strict_load: bool = False,
                 begin_iter: int = 0, begin_epoch: int = 0, **kwargs):
        self.strict_load = strict_load
        self.ema_cfg = dict(type=ema_type, **kwargs)
        require(not (begin_iter != 0 and begin_epoch != 0),
                f'EMAHook: `begin_iter` and `begin_epoch` should not be both set, but got '
                f'begin_iter={begin_iter!r} and begin_epoch={begin_epoch!r}')
        require(begin_iter >= 0, '`begin_iter` must larger than or equal to 0, '
                f'but got begin_iter: {begin_iter}')
        require(begin_epoch >= 0, '`begin_epoch` must larger than or equal to 0, '
                f'but got begin_epoch: {begin_epoch}')
        self.begin_iter = begin_iter
        self.begin_epoch = begin_epoch
        self.enabled_by_epoch = self.begin_epoch > 0

    def before_run(self, runner) -> None:
        """Unwrap the model and build the averaged copy."""
        self.src_model = unwrap(runner.model, 'mmengine')
        # upstream resolves ema_type in the runner's default scope (mmdet 3.x configs write
        # ema_type='ExpMomentumEMA' with default_scope='mmdet'); outside an mmengine-family
        # default scope, in mmengine's own
        scope = current_scope()
        self.ema_model = MODELS.build(self.ema_cfg, default_args=dict(model=self.src_model),
                                      scope=scope if in_subtree(scope, 'mmengine') else 'mmengine')

    def before_train(self, runner) -> None:
        """Check ``begin_epoch <= max_epochs`` / ``begin_iter <= max_iters``."""
        if self.enabled_by_epoch:
            require(self.begin_epoch <= runner.max_epochs,
                    'self.begin_epoch should be smaller than or equal to '
                    f'runner.max_epochs: {runner.max_epochs}, but got '
                    f'begin_epoch: {self.begin_epoch}')
        else:
            require(self.begin_iter <= runner.max_iters,
                    'self.begin_iter should be smaller than or equal to '
                    f'runner.max_iters: {runner.max_iters}, but got '
                    f'begin_iter: {self.begin_iter}')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Update the EMA once started; before that, copy the source into it."""
        if self._ema_started(runner):
            self.ema_model.update_parameters(self.src_model)
        else:
            ema_params = self.ema_model.module.state_dict()
            src_params = self.src_model.state_dict()
            keys = list(ema_params)
            kernels.copy_([ema_params[k].data for k in keys],
                          [src_params[k].data for k in keys])

    def before_val_epoch(self, runner) -> None:
        """Swap the EMA weights in for validation."""
        self._swap_ema_parameters()

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Swap the raw weights back after validation."""
        self._swap_ema_parameters()

    def before_test_epoch(self, runner) -> None:
        """Swap the EMA weights in for testing."""
        self._swap_ema_parameters()

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Swap the raw weights back after testing."""
        self._swap_ema_parameters()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add ``ema_state_dict`` and swap its ``module.*`` values with ``state_dict``'s."""
        checkpoint['ema_state_dict'] = self.ema_model.state_dict()
        self._swap_ema_state_dict(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the EMA state (resume) or seed it from ``state_dict`` (load)."""
        if 'ema_state_dict' in checkpoint and runner._resume:
            self._swap_ema_state_dict(checkpoint)
            self.ema_model.load_state_dict(checkpoint['ema_state_dict'], strict=self.strict_load)
        else:
            if runner._resume:
                _LOG.warning('There is no `ema_state_dict` in checkpoint. `EMAHook` will make a '
                             'copy of `state_dict` as the initial `ema_state_dict`')
            load_state_dict(self.ema_model.module, copy.deepcopy(checkpoint['state_dict']),
                            strict=self.strict_load, generation='mmengine')

    def _swap_ema_parameters(self) -> None:
        """Exchange the model's and the EMA copy's parameters (and buffers) in place."""
        avg, src, aliases = self._swap_lists()
        # the averaged model's fast-path pairs (their flat buffer of small parameters, if
        # any) or an empty TensorPairs kept across calls: either carries swap_'s memo of
        # the last exchanges, so swapping back re-checks them cheaply
        plan = self.ema_model.__dict__.get('_compat_plan')
        if plan is not None and kernels.fast_path_enabled():
            state = plan['avg_floating']
        else:
            state = self.__dict__.setdefault('_compat_swap_state', kernels.TensorPairs([], []))
        kernels.swap_(avg, src, aliases=aliases, pairs=state)

    def _swap_lists(self):
        """``(averaged tensors, source tensors, aliases)`` as upstream's walks yield them.

        Upstream walks ``parameters()`` (and ``buffers()`` with ``update_buffers``)
        of both models on every swap. The lists are cached and reused while
        :class:`~compat_ema.core.structure.ModuleSnapshot` s of both trees prove the
        walks would yield the same objects. Owners are listed (not ``.data``) so
        storages can be exchanged; the averaged model's ``avg_parameters``
        (``state_dict()`` aliases when ``update_buffers=True``) follow as aliases.
        """
        ema, src_model = self.ema_model.module, self.src_model
        avg_parameters = getattr(self.ema_model, 'avg_parameters', {})
        ub = self.ema_model.update_buffers
        c = self.__dict__.get('_compat_swap_lists')
        if c is not None and c['ema'] is ema and c['src'] is src_model and c['ub'] == ub \
                and c['avg_dict'] is avg_parameters and c['snaps'] is not None \
                and tuple(map(id, avg_parameters.values())) == c['avg_ids'] \
                and c['snaps'][0].unchanged() and c['snaps'][1].unchanged():
            return c['avg'], c['src_list'], c['aliases']
        if ub:
            avg = itertools.chain(ema.parameters(), ema.buffers())
            src = itertools.chain(src_model.parameters(), src_model.buffers())
        else:
            avg = ema.parameters()
            src = src_model.parameters()
        pairs = list(zip(avg, src))
        snaps = ModuleSnapshot.take(ema), ModuleSnapshot.take(src_model)
        c = dict(ema=ema, src=src_model, ub=ub, avg_dict=avg_parameters,
                 avg_ids=tuple(map(id, avg_parameters.values())),
                 snaps=snaps if None not in snaps else None,
                 avg=[a for a, _ in pairs], src_list=[s for _, s in pairs],
                 aliases=list(avg_parameters.values()))
        self.__dict__['_compat_swap_lists'] = c
        return c['avg'], c['src_list'], c['aliases']

    def _swap_ema_state_dict(self, checkpoint: dict) -> None:
        """Swap the ``module.*`` values of ``ema_state_dict`` with ``state_dict``'s."""
        model_state = checkpoint['state_dict']
        ema_state = checkpoint['ema_state_dict']
        for k in ema_state:
            if k[:7] == 'module.':
                tmp = ema_state[k]
                ema_state[k] = model_state[k[7:]]
                model_state[k[7:]] = tmp

    def _ema_started(self, runner) -> bool:
        """``epoch + 1 >= begin_epoch`` when started by epoch, else ``iter + 1 >= begin_iter``."""
        if self.enabled_by_epoch:
            return runner.epoch + 1 >= self.begin_epoch
        return runner.iter + 1 >= self.begin_iter
