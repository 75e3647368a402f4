"""``mmedit.core.hooks.ema`` (mmedit 0.16.1): ``ExponentialMovingAverageHook``, bit for bit.

An mmcv 1.x hook that keeps the EMA of ``model.generator`` in
``model.generator_ema`` (any ``<name>_ema`` / ``<name>`` pair). Quirks carried
(the shared ones are listed in :mod:`compat_ema.core.module_ema`):

* ``lerp(a=orig, b=ema)`` returns ``a + (b - a) * m``: ``momentum`` (default
  0.999) is the weight of the *old EMA*, the opposite of mmagic 1.x. Frozen
  parameters and buffers use ``momentum_nontrainable`` (default 0.0, so they
  are copied, except that ``-0.0`` becomes ``+0.0`` and a non-finite EMA entry
  turns them into NaN);
* the momentum values are never checked (any float, even > 1, is used);
* ``interval`` defaults to -1: the EMA is a copy of the generator until
  ``start_iter`` and never changes afterwards. Gating is
  ``(iter + 1 - start_iter) % interval == 0``, not mmcv's ``(iter + 1) % n``;
* ``interp_mode`` may name any attribute of the hook (upstream checks
  ``hasattr(self, interp_mode)``); unknown ``interp_cfg`` keys fail with a
  TypeError at the first update, not at construction;
* ``after_train_iter`` only: no swap at validation, nothing in checkpoints
  beyond the model's own ``generator_ema.*`` entries.
"""
from __future__ import annotations

import copy
from functools import partial
from typing import Any, Optional

from ....core import module_ema
from ....core.checks import require
from ....mmcv.runner.hooks.hook import Hook
from ....registry import HOOKS

__all__ = ['ExponentialMovingAverageHook']


@HOOKS.register_module(scope='mmedit')
class ExponentialMovingAverageHook(Hook):
    """``mmedit.core.hooks.ExponentialMovingAverageHook`` (mmedit 0.16.1).

    Args:
        module_keys: the EMA module name(s), each ending in ``'_ema'`` (a str
            or a tuple of str).
        interp_mode: name of the interpolation method. Defaults to 'lerp'.
        interp_cfg: keyword arguments of the interpolation
            (``momentum``, ``momentum_nontrainable``). Defaults to None.
        interval: update every ``interval`` iterations from ``start_iter``
            on; <= 0 never updates. Defaults to -1.
        start_iter: before this iteration the EMA is a copy of the source.
            Defaults to 0.
    """

    _generation = 'mmcv'

    def __init__(self, module_keys: Any, interp_mode: str = 'lerp',
                 interp_cfg: Optional[dict] = None, interval: int = -1,
                 start_iter: int = 0) -> None:
        super().__init__()
        self.module_keys = module_ema.check_module_keys(module_keys, type(self).__name__)
        self.interp_mode = interp_mode
        self.interp_cfg = dict() if interp_cfg is None else copy.deepcopy(interp_cfg)
        self.interval = interval
        self.start_iter = start_iter
        require(hasattr(self, interp_mode),
                f'Currently, we do not support {self.interp_mode} for EMA.')
        self.interp_func = partial(getattr(self, interp_mode), **self.interp_cfg)

    @staticmethod
    def lerp(a, b, momentum=0.999, momentum_nontrainable=0., trainable=True):
        """``a + (b - a) * m`` with ``a`` the source and ``b`` the EMA entry (mmedit's sense)."""
        m = momentum if trainable else momentum_nontrainable
        return a + (b - a) * m

    def every_n_iters(self, runner, n: int) -> bool:
        """True before ``start_iter``; then ``(iter + 1 - start_iter) % n == 0`` (False if n <= 0)."""
        return module_ema.gate(runner.iter, self.start_iter, n)

    def after_train_iter(self, runner) -> None:
        """Copy (before ``start_iter``) or interpolate every ``generator_ema`` entry."""
        if not self.every_n_iters(runner, self.interval):
            return
        module_ema.update_module_ema(runner.model, self.module_keys, self._generation,
                                     runner.iter < self.start_iter, self.interp_func)

    def before_run(self, runner) -> None:
        """Deep-copy the source into a missing EMA module (with a warning)."""
        module_ema.ensure_ema_modules(runner.model, self.module_keys, self._generation)
