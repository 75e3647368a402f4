"""``mmgen.core.hooks.ema_hook`` (mmgen 0.7.3): ``ExponentialMovingAverageHook``, bit for bit.

mmedit 0.16's hook (:mod:`compat_ema.mmedit`: ``a + (b - a) * momentum``,
``momentum`` = weight of the old EMA, ``interval=-1`` default, ``start_iter``
copies, ``(iter + 1 - start_iter) % n`` gating, the ``state_dict`` update)
with mmgen's differences:

* ``interp_mode`` must be ``'lerp'`` and ``momentum_policy`` one of
  ``'fixed'``, ``'rampup'`` (checked first, AssertionError, raised explicitly);
* ``interp_cfg`` is not bound at construction: it is copied at every acting
  call and, with ``momentum_policy='rampup'``, its ``momentum`` is replaced by
  :meth:`rampup` of the runner (computed even while the hook only copies, so a
  bad ``momentum_cfg`` fails at the first call); ``interp_cfg`` keys reach
  ``lerp`` as keywords at every entry (``trainable`` in it is a TypeError);
* :meth:`rampup` is StyleGAN3's EMA ramp-up:
  ``0.5 ** (batch_size / max(min(ema_kimg * 1000, (iter + 1) * batch_size * ema_rampup), eps))``.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from ....core import module_ema
from ....core.checks import require
from ....mmedit.core.hooks.ema import ExponentialMovingAverageHook as _MMEditHook
from ....registry import HOOKS

__all__ = ['ExponentialMovingAverageHook']


@HOOKS.register_module(scope='mmgen')
class ExponentialMovingAverageHook(_MMEditHook):
    """``mmgen.core.hooks.ExponentialMovingAverageHook`` (mmgen 0.7.3).

    Args:
        module_keys: the EMA module name(s), each ending in ``'_ema'``.
        interp_mode: must be 'lerp'. Defaults to 'lerp'.
        interp_cfg: keyword arguments of ``lerp``. Defaults to None.
        interval: update every ``interval`` iterations from ``start_iter`` on;
            <= 0 never updates. Defaults to -1.
        start_iter: before this iteration the EMA is a copy. Defaults to 0.
        momentum_policy: 'fixed' or 'rampup'. Defaults to 'fixed'.
        momentum_cfg: keyword arguments of the momentum policy. Defaults to None.
    """

    _registered_interp_funcs = ['lerp']
    _registered_momentum_updaters = ['rampup', 'fixed']

    def __init__(self, module_keys: Any, interp_mode: str = 'lerp',
                 interp_cfg: Optional[dict] = None, interval: int = -1, start_iter: int = 0,
                 momentum_policy: str = 'fixed', momentum_cfg: Optional[dict] = None) -> None:
        require(interp_mode in self._registered_interp_funcs,
                f'Supported interpolation functions are {self._registered_interp_funcs}, '
                f'but got {interp_mode}')
        require(momentum_policy in self._registered_momentum_updaters,
                f'Supported momentum policy are{self._registered_momentum_updaters}, '
                f'but got {momentum_policy}')
        super().__init__(module_keys, interp_mode, interp_cfg, interval, start_iter)
        self.interp_func = getattr(self, interp_mode)   # no partial: interp_cfg is per call
        self.momentum_cfg = dict() if momentum_cfg is None else copy.deepcopy(momentum_cfg)
        self.momentum_policy = momentum_policy
        if momentum_policy != 'fixed':
            require(hasattr(self, momentum_policy),
                    f'Currently, we do not support {self.momentum_policy} for EMA.')
            self.momentum_updater = getattr(self, momentum_policy)

    @staticmethod
    def rampup(runner, ema_kimg=10, ema_rampup=0.05, batch_size=4, eps=1e-8):
        """StyleGAN3's EMA ramp-up: ``dict(momentum=0.5 ** (batch_size / max(ema_nimg, eps)))``."""
        cur_nimg = (runner.iter + 1) * batch_size
        ema_nimg = ema_kimg * 1000
        if ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
        return dict(momentum=0.5 ** (batch_size / max(ema_nimg, eps)))

    def after_train_iter(self, runner) -> None:
        """Copy (before ``start_iter``) or interpolate with this call's ``interp_cfg``."""
        if not self.every_n_iters(runner, self.interval):
            return
        cfg = copy.deepcopy(self.interp_cfg)
        if self.momentum_policy != 'fixed':
            cfg.update(self.momentum_updater(runner, **self.momentum_cfg))

        def interp(a, b, trainable):
            return self.interp_func(a, b, trainable=trainable, **cfg)
        module_ema.update_module_ema(runner.model, self.module_keys, self._generation,
                                     runner.iter < self.start_iter, interp)
