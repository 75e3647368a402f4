"""``mmdet.core.hook.ema`` (mmdet 2.28.2): BaseEMAHook, ExpMomentumEMAHook,
LinearMomentumEMAHook, reproduced bit for bit.

Quirks carried (UPSTREAM_NOTES.md 2, 3, 6-9; RUNNER_SPEC B.1-B.6):

* updates happen when ``(runner.iter + 1) % interval == 0`` (iterations k-1,
  2k-1, ...), unlike mmcv's ``iter % interval``; the momentum is *not* raised
  to ``interval`` except in LinearMomentumEMAHook's formula.
* ``skip_buffers=False`` (the default) tracks the whole ``model.state_dict()``
  (buffers, integer ``num_batches_tracked`` and tied weights listed twice
  included); integer entries are swapped every epoch but never averaged, so
  the model's ``num_batches_tracked`` shows its ``before_run`` value after training.
* the momentum function receives the 0-based ``runner.iter``;
  ExpMomentum: ``(1-m)*exp(-(1+iter)/total_iter) + m``; Linear:
  ``min(m**interval, (1+iter)/(warm_up+iter))``.
* no check on ``interval`` (0 fails with ZeroDivisionError at the first
  update, as upstream); ``BaseEMAHook`` is not registered, as upstream.
* ``resume_from`` resumes inside ``before_run``; the runner-level
  ``resume_from`` runs before it and drops the ``ema_*`` keys (the resume
  matrix in RUNNER_SPEC B.6; see :mod:`compat_ema.doctor`).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

from ...._compat_registry import MMDET_HOOKS
from ....core import kernels
from ....core.checks import require
from ....core.wrappers import unwrap
from ....mmcv.runner.hooks.hook import Hook


class BaseEMAHook(Hook):
    """``mmdet.core.hook.ema.BaseEMAHook``: constant momentum unless ``momentum_fun`` is given.

    Args:
        momentum: update weight, ``0 < momentum < 1``. Defaults to 0.0002.
        interval: update when ``(iter + 1) % interval == 0``. Defaults to 1.
        skip_buffers: track parameters only (True) or the whole state dict. Defaults to False.
        resume_from: checkpoint to resume in ``before_run``. Defaults to None.
        momentum_fun: ``iter -> momentum``. Defaults to None.
    """

    def __init__(self, momentum: float = 0.0002, interval: int = 1, skip_buffers: bool = False,
                 resume_from: Optional[str] = None,
                 momentum_fun: Optional[Callable[[int], float]] = None):
        require(0 < momentum < 1,
                f'{type(self).__name__}: momentum must be in the open interval (0, 1), '
                f'but got {momentum!r}')
        self.momentum = momentum
        self.skip_buffers = skip_buffers
        self.interval = interval
        self.checkpoint = resume_from
        self.momentum_fun = momentum_fun

    def before_run(self, runner) -> None:
        """Register an ``ema_*`` clone for every tracked tensor; resume if asked."""
        model = unwrap(runner.model, 'mmcv')
        self.param_ema_buffer: Dict[str, str] = {}
        if self.skip_buffers:
            self.model_parameters = dict(model.named_parameters())
        else:
            self.model_parameters = model.state_dict()
        for name, value in self.model_parameters.items():
            buffer_name = f"ema_{name.replace('.', '_')}"
            self.param_ema_buffer[name] = buffer_name
            model.register_buffer(buffer_name, value.data.clone())
        self.model_buffers = dict(model.named_buffers())
        if self.checkpoint is not None:
            runner.resume(self.checkpoint)

    def get_momentum(self, runner) -> float:
        """``momentum_fun(runner.iter)`` if set, else the constant momentum."""
        return self.momentum_fun(runner.iter) if self.momentum_fun else self.momentum

    def after_train_iter(self, runner) -> None:
        """Update floating-point entries when ``(runner.iter + 1) % interval == 0``."""
        if (runner.iter + 1) % self.interval != 0:
            return
        momentum = self.get_momentum(runner)
        ema, src = [], []
        for name, parameter in self.model_parameters.items():
            if parameter.dtype.is_floating_point:
                ema.append(self.model_buffers[self.param_ema_buffer[name]])
                src.append(parameter.data)
        kernels.mul_add_(ema, src, momentum)

    def after_train_epoch(self, runner) -> None:
        """Load the EMA values into the model (before the EvalHook)."""
        self._swap_ema_parameters()

    def before_train_epoch(self, runner) -> None:
        """Restore the raw values after last epoch's evaluation."""
        self._swap_ema_parameters()

    def _swap_ema_parameters(self) -> None:
        """Exchange every tracked entry with its ``ema_*`` buffer, integers included."""
        names = list(self.model_parameters)
        vals = [self.model_parameters[n].data for n in names]
        bufs = [self.model_buffers[self.param_ema_buffer[n]].data for n in names]
        kernels.swap_(vals, bufs)


@MMDET_HOOKS.register_module()
class ExpMomentumEMAHook(BaseEMAHook):
    """``mmdet.core.hook.ema.ExpMomentumEMAHook``: ``(1-m)*exp(-(1+iter)/total_iter) + m``.

    Args:
        total_iter: decay length of the momentum. Defaults to 2000.
        **kwargs: BaseEMAHook arguments.
    """

    def __init__(self, total_iter: int = 2000, **kwargs):
        super().__init__(**kwargs)
        self.total_iter = total_iter
        self.momentum_fun = lambda x: (1 - self.momentum) * math.exp(
            -(1 + x) / total_iter) + self.momentum


@MMDET_HOOKS.register_module()
class LinearMomentumEMAHook(BaseEMAHook):
    """``mmdet.core.hook.ema.LinearMomentumEMAHook``: ``min(m**interval, (1+iter)/(warm_up+iter))``.

    Args:
        warm_up: warm-up length of the momentum cap. Defaults to 100.
        **kwargs: BaseEMAHook arguments.
    """

    def __init__(self, warm_up: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.warm_up = warm_up
        self.momentum_fun = lambda x: min(self.momentum**self.interval,
                                          (1 + x) / (warm_up + x))
