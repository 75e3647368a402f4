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

from typing import Any, Optional

from ....core import module_ema
from ....mmcv.runner.hooks.hook import Hook
from ....registry import HOOKS

__all__ = ['ExponentialMovingAverageHook']


@HOOKS.register_module(scope='mmedit')
class ExponentialMovingAverageHook(module_ema.ModuleEMAHookMixin, Hook):
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
        module_ema.configure_hook(self, module_keys, interp_mode, interp_cfg, interval, start_iter)

    @staticmethod
    def lerp(a, b, momentum=0.999, momentum_nontrainable=0., trainable=True):
        """``a + (b - a) * m`` with ``a`` the source and ``b`` the EMA entry (mmedit's sense)."""
        m = momentum if trainable else momentum_nontrainable
        return a + (b - a) * m

    def after_train_iter(self, runner) -> None:
        """Copy (before ``start_iter``) or interpolate every ``generator_ema`` entry."""
        module_ema.hook_update(self, runner, self.interp_func)
