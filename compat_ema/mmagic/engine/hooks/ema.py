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

import copy
import warnings
from functools import partial
from typing import Any, Optional, Sequence

from ....core import module_ema
from ....core.checks import require
from ....mmengine.hooks.hook import Hook
from ....registry import HOOKS

__all__ = ['ExponentialMovingAverageHook']


@HOOKS.register_module(scope='mmagic')
class ExponentialMovingAverageHook(Hook):
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
        self.module_keys = module_ema.check_module_keys(module_keys, type(self).__name__)
        self.interp_mode = interp_mode
        self.interp_cfg = dict() if interp_cfg is None else copy.deepcopy(interp_cfg)
        self.interval = interval
        self.start_iter = start_iter
        require(hasattr(self, interp_mode),
                f'Currently, we do not support {self.interp_mode} for EMA.')
        self.interp_func = partial(getattr(self, interp_mode), **self.interp_cfg)

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
                          f'{momentum}. Please make sure the value is correct.')
        m = momentum if trainable else momentum_nontrainable
        return b + (a - b) * m

    def every_n_iters(self, runner, n: int) -> bool:
        """True before ``start_iter``; then ``(iter + 1 - start_iter) % n == 0`` (False if n <= 0)."""
        return module_ema.gate(runner.iter, self.start_iter, n)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Sequence[dict]] = None,
                         outputs: Optional[dict] = None) -> None:
        """Copy (before ``start_iter``) or interpolate every ``generator_ema`` entry."""
        if not self.every_n_iters(runner, self.interval):
            return
        module_ema.update_module_ema(runner.model, self.module_keys, self._generation,
                                     runner.iter < self.start_iter, self.interp_func)

    def before_run(self, runner) -> None:
        """Deep-copy the source into a missing EMA module (with a warning)."""
        module_ema.ensure_ema_modules(runner.model, self.module_keys, self._generation)
