"""``LegacyEMAHook``: mmengine's EMAHook with the legacy (mmcv/mmdet 2.x) swap points.

mmengine's ``EMAHook`` swaps the EMA weights in around validation and testing
only, so after ``runner.train()`` the model holds the raw weights. The legacy
hooks swapped at train-epoch boundaries: ``after_train_epoch`` puts the EMA
weights into the model (so validation, and whatever runs after training, sees
them) and ``before_train_epoch`` puts the raw weights back. This hook does the
same inside an mmengine Runner, with the legacy averaged models of
:mod:`compat_ema.legacy.averaged_models`:

* after ``train()`` the model holds the EMA weights (the legacy behaviour);
* the swap is state-aware instead of blind: ``after_train_epoch`` swaps only
  if the model holds the raw weights, ``before_train_epoch`` only if it holds
  the EMA. In every legacy flow that was self-consistent (YOLOX: priority 49
  plus hook-level ``resume_from``) this gives the same values; the legacy
  inversion after resuming a NORMAL-priority checkpoint (docs/runner-behaviour.md#resume-matrix) is
  not reproduced;
* no swap around val/test epochs (validation after an epoch already sees the
  EMA weights, as in mmcv/mmdet);
* the clone is re-taken in ``before_train`` (after mmengine's ``init_weights`` and
  ``load_from``), unless a resume restored the EMA, as the legacy hooks cloned at the
  start of training;
* the update receives ``runner.iter`` explicitly, so the legacy momentum and
  gating follow the runner's global iteration even after resuming from a
  checkpoint without ``ema_state_dict``;
* checkpoints use mmengine's layout whatever the swap state
  (``state_dict`` = EMA, ``ema_state_dict`` = ``steps`` + raw ``module.*``),
  so they load into mmengine's own ``EMAHook`` and resume like it;
* under ``IterBasedTrainLoop`` the only train-epoch boundaries are the start
  and the end of training: validation inside the loop sees the raw weights (as
  under mmcv's IterBasedRunner) and the model holds the EMA after training.

``begin_iter``/``begin_epoch`` are rejected: the legacy hooks had no such option.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..core.checks import require
from ..core.wrappers import unwrap
from ..mmengine.hooks.ema_hook import EMAHook
from ..registry import HOOKS, MODELS
from .averaged_models import LegacyAveragedModel

__all__ = ['LegacyEMAHook']


@HOOKS.register_module(scope='legacy')
class LegacyEMAHook(EMAHook):
    """An mmengine hook with mmcv/mmdet 2.x EMA swap points and numerics.

    Args:
        ema_type: a legacy averaged model name in the ``legacy`` scope
            (``'LegacyMMCVEMA'``, ``'LegacyMMDetEMA'``, ``'LegacyExpMomentumEMA'``,
            ``'LegacyLinearMomentumEMA'``) or a :class:`LegacyAveragedModel`
            subclass. Defaults to 'LegacyMMCVEMA'.
        strict_load: strict loading of EMA state from checkpoints. Defaults to False.
        **kwargs: arguments of the averaged model (momentum, interval, warm_up,
            total_iter, skip_buffers, ...).
    """

    priority = 'NORMAL'

    def __init__(self, ema_type='LegacyMMCVEMA', strict_load: bool = False, **kwargs):
        for key in ('begin_iter', 'begin_epoch'):
            require(not kwargs.pop(key, 0),
                    f'LegacyEMAHook: {key} is not supported (the legacy hooks averaged from the '
                    'first iteration, and a delayed start breaks the legacy iteration count); '
                    'use mmengine EMAHook for a delayed start')
        super().__init__(ema_type=ema_type, strict_load=strict_load, **kwargs)
        self._holds_ema = False

    @property
    def holds_ema(self) -> bool:
        """Whether the model currently holds the EMA weights (after a train epoch)."""
        return self._holds_ema

    def before_run(self, runner) -> None:
        """Build the legacy averaged model: a clone of the model as it is now."""
        self.src_model = unwrap(runner.model, 'mmengine')
        self.ema_model = MODELS.build(self.ema_cfg, default_args=dict(model=self.src_model),
                                      scope='legacy')
        require(isinstance(self.ema_model, LegacyAveragedModel),
                f'LegacyEMAHook: ema_type must build a compat_ema.legacy averaged model, got '
                f'{type(self.ema_model).__name__}; use EMAHook for mmengine averaged models')
        self._holds_ema = False
        self._restored = False

    def before_train(self, runner) -> None:
        """Re-take the clone unless the EMA was restored by a resume.

        The legacy hooks cloned the weights when training started, after the model's
        ``init_weights`` and any ``load_from``; mmengine's Runner builds the hook's copy in
        ``before_run``, *before* ``init_weights`` and loading. Copying the model into the EMA here
        gives the legacy starting point (with ``load_from`` it equals what mmengine's
        ``after_load_checkpoint`` loaded).
        """
        super().before_train(runner)
        if not self._restored:
            avg = self.ema_model.module.state_dict()
            src = self.src_model.state_dict()
            with torch.no_grad():
                for key, value in avg.items():
                    value.copy_(src[key])

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Update the EMA as the legacy hook did at ``runner.iter``."""
        self.ema_model.update_parameters(self.src_model, iteration=runner.iter)

    def before_train_epoch(self, runner) -> None:
        """Put the raw weights back into the model (legacy ``before_train_epoch``)."""
        if self._holds_ema:
            self._swap_ema_parameters()
            self._holds_ema = False

    def after_train_epoch(self, runner) -> None:
        """Put the EMA weights into the model (legacy ``after_train_epoch``)."""
        if not self._holds_ema:
            self._swap_ema_parameters()
            self._holds_ema = True

    def before_val_epoch(self, runner) -> None:
        """No swap: validation sees what the model holds, as in mmcv/mmdet."""

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """No swap (see :meth:`before_val_epoch`)."""

    def before_test_epoch(self, runner) -> None:
        """No swap: testing sees what the model holds."""

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """No swap (see :meth:`before_test_epoch`)."""

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Write mmengine's layout: ``state_dict`` = EMA, ``ema_state_dict`` = raw + steps."""
        checkpoint['ema_state_dict'] = self.ema_model.state_dict()
        if not self._holds_ema:
            self._swap_ema_state_dict(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """As mmengine's EMAHook; afterwards the model holds the raw (resume) or loaded weights."""
        super().after_load_checkpoint(runner, checkpoint)
        self._holds_ema = False
        self._restored = bool(runner._resume and 'ema_state_dict' in checkpoint)
