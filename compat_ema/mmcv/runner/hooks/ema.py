"""``mmcv.runner.hooks.EMAHook`` (mmcv 1.6.0), reproduced bit for bit.

Quirks carried (docs/upstream-quirks.md quirks 1-7, docs/runner-behaviour.md#mmcv-emahook):

* ``momentum`` is stored as ``momentum ** interval``: a larger interval makes
  the per-update momentum *smaller* (0.0002 at interval 4 is 1.6e-15).
* the effective momentum is ``min(momentum**interval, (1+iter)/(warm_up+iter))``:
  the "warm-up" only bites when ``momentum**interval > 1/warm_up`` roughly.
* updates happen when ``runner.iter % interval == 0`` (iterations 0, k, 2k...).
* only parameters are averaged (``named_parameters``); BN statistics are not
  averaged nor swapped. EMA copies live as ``ema_<name with . as _>``
  persistent buffers on the top-level module, so they land first in mmcv
  checkpoints.
* the update is ``ema.mul_(1-m)`` then ``add_(param, alpha=m)``: the value of
  upstream's deprecated ``add_(m, param)`` call, without the deprecation warning.
* the swap happens in ``before_train_epoch`` and ``after_train_epoch``; after
  training the model holds the EMA weights. mmcv's IterBasedRunner never calls
  those methods, so nothing is ever swapped there (mmcv#2195).
* ``resume_from`` calls ``runner.resume(path)`` inside ``before_run``.
"""
from __future__ import annotations

from typing import Dict, Optional

from ...._compat_registry import MMCV_HOOKS
from ....core import kernels
from ....core.checks import require
from ....core.wrappers import unwrap
from .hook import Hook


@MMCV_HOOKS.register_module()
class EMAHook(Hook):
    """Exponential Moving Average hook of mmcv 1.6 (``mmcv.runner.hooks.EMAHook``).

    Args:
        momentum: update weight, ``0 < momentum < 1``. Defaults to 0.0002.
        interval: update every ``interval`` iterations (an int > 0). Defaults to 1.
        warm_up: warm-up length of the momentum cap. Defaults to 100.
        resume_from: checkpoint to resume in ``before_run``. Defaults to None.
    """

    def __init__(self, momentum: float = 0.0002, interval: int = 1, warm_up: int = 100,
                 resume_from: Optional[str] = None):
        require(isinstance(interval, int) and interval > 0,
                f'EMAHook: interval must be an int greater than 0, but got {interval!r}')
        self.warm_up = warm_up
        self.interval = interval
        require(momentum > 0 and momentum < 1,
                f'EMAHook: momentum must be in the open interval (0, 1), but got {momentum!r}')
        self.momentum = momentum**interval
        self.checkpoint = resume_from

    def before_run(self, runner) -> None:
        """Register an ``ema_*`` buffer (a clone) for every parameter; resume if asked."""
        model = unwrap(runner.model, 'mmcv')
        self.param_ema_buffer: Dict[str, str] = {}
        self.model_parameters = dict(model.named_parameters(recurse=True))
        for name, value in self.model_parameters.items():
            buffer_name = f"ema_{name.replace('.', '_')}"
            self.param_ema_buffer[name] = buffer_name
            model.register_buffer(buffer_name, value.data.clone())
        self.model_buffers = dict(model.named_buffers(recurse=True))
        if self.checkpoint is not None:
            runner.resume(self.checkpoint)

    def effective_momentum(self, curr_step: int) -> float:
        """``min(momentum**interval, (1 + iter) / (warm_up + iter))``, as upstream computes it."""
        return min(self.momentum, (1 + curr_step) / (self.warm_up + curr_step))

    def after_train_iter(self, runner) -> None:
        """Update the EMA buffers when ``runner.iter % interval == 0``."""
        curr_step = runner.iter
        momentum = self.effective_momentum(curr_step)
        if curr_step % self.interval != 0:
            return
        self._ema_pairs().mul_add_(momentum)

    def after_train_epoch(self, runner) -> None:
        """Load the EMA weights into the model (before the EvalHook)."""
        self._swap_ema_parameters()

    def before_train_epoch(self, runner) -> None:
        """Restore the raw weights after last epoch's evaluation."""
        self._swap_ema_parameters()

    def _ema_pairs(self) -> kernels.TensorPairs:
        """(ema buffer, parameter) objects in upstream's order, built once.

        Cached: the buffer and ``Parameter`` objects upstream's loop reads from
        ``model_buffers``/``model_parameters`` (the same objects every call, so
        ``param.data`` changes and swaps are seen). Rebuilt when one of those
        dicts (or ``param_ema_buffer``) is replaced or changes size. The
        hook owns the ``ema_*`` buffers, so the fast path may gather the small
        ones into one flat buffer (:meth:`~compat_ema.core.kernels.TensorPairs.flatten_small_destinations`).
        """
        key = tuple((id(d), len(d)) for d in (self.model_parameters, self.model_buffers,
                                               self.param_ema_buffer))
        if getattr(self, '_pairs_key', None) != key:
            names = list(self.model_parameters)
            self._pairs = kernels.TensorPairs(
                [self.model_buffers[self.param_ema_buffer[n]] for n in names],
                [self.model_parameters[n] for n in names]).flatten_small_destinations()
            self._pairs_key = key
        return self._pairs

    def _swap_ema_parameters(self) -> None:
        """Exchange every parameter with its ``ema_*`` buffer (storage exchange where unobservable)."""
        pairs = self._ema_pairs()
        kernels.swap_(pairs.src, pairs.dst, pairs=pairs)
