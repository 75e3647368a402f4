"""``mmagic.engine.hooks.ema`` (mmagic 1.2.0): ``ExponentialMovingAverageHook``, bit for bit.

mmedit 0.x's hook on mmengine (same procedure, see
:mod:`compat_ema.core.module_ema`), with the interpolation *flipped*:

* ``lerp(a=orig, b=ema)`` returns ``b + (a - b) * m``: ``momentum`` (default
  0.001) is the weight of the *new* weights; ``momentum_nontrainable``
  defaults to 1.0, which is not an exact copy (``b + (a - b) * 1`` rounds);
* the checks live inside ``lerp``, so they run at every interpolated entry,
  not at construction: ``0 < momentum < 1`` and
  ``0 < momentum_nontrainable <= 1`` (AssertionError, raised explicitly here),
  and a UserWarning whenever ``momentum > 0.5`` (the un-flipped legacy value);
  nothing is checked while the hook only copies (before ``start_iter``);
* ``interval=-1`` default, ``(iter + 1 - start_iter) % n`` gating, the
  ``before_run`` deep copy and the ``state_dict``/``load_state_dict`` update
  are mmedit's.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

from ....core import module_ema
from ....mmengine.hooks.hook import Hook
from ....registry import HOOKS

__all__ = ['ExponentialMovingAverageHook']


@HOOKS.register_module(scope='mmagic')
class ExponentialMovingAverageHook(module_ema.ModuleEMAHookMixin, Hook):
    """``mmagic.engine.hooks.ExponentialMovingAverageHook`` (mmagic 1.2.0).

    Args:
        module_keys: the EMA module name(s), each ending in ``'_ema'``.
        interp_mode: name of the interpolation method. Defaults to 'lerp'.
        interp_cfg: keyword arguments of the interpolation (``momentum``,
            ``momentum_nontrainable``). Defaults to None.
        interval: update every ``interval`` iterations from ``start_iter``
            on; <= 0 never updates. Defaults to -1.
        start_iter: before this iteration the EMA is a copy of the source.
            Defaults to 0.
    """

    _generation = 'mmengine'

    def __init__(self, module_keys: Any, interp_mode: str = 'lerp',
                 interp_cfg: Optional[dict] = None, interval: int = -1,
                 start_iter: int = 0) -> None:
        super().__init__()
        module_ema.configure_hook(self, module_keys, interp_mode, interp_cfg, interval, start_iter)

    @staticmethod
    def lerp(a, b, momentum=0.001, momentum_nontrainable=1., trainable=True):
        """``b + (a - b) * m`` with ``a`` the source and ``b`` the EMA entry (mmagic's sense)."""
        # explicit raises (not assert: they must survive python -O); messages built on failure only
        if not 0.0 < momentum < 1.0:
            raise AssertionError(f'momentum must be in range (0.0, 1.0)but got {momentum}')
        if not 0.0 < momentum_nontrainable <= 1.0:
            raise AssertionError(f'momentum_nontrainable must be in range (0.0, 1.0] but got '
                                 f'{momentum_nontrainable}')
        if momentum > 0.5:
            warnings.warn('The value of momentum in EMA is usually a small number,which is '
                          'different from the conventional notion of momentum but got '
                          f'{momentum}. Please make sure the value is correct.',
                          stacklevel=1)  # upstream's (the default)
        m = momentum if trainable else momentum_nontrainable
        return b + (a - b) * m

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Sequence[dict]] = None,
                         outputs: Optional[dict] = None) -> None:
        """Copy (before ``start_iter``) or interpolate every ``generator_ema`` entry."""
        module_ema.hook_update(self, runner, self.interp_func)
