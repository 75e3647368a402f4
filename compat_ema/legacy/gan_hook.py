"""``LegacyExponentialMovingAverageHook``: mmedit 0.16's EMA numbers inside an mmengine Runner.

mmagic 1.x's :class:`~compat_ema.mmagic.ExponentialMovingAverageHook` flipped
``momentum`` and rounds differently (``b + (a - b) * m`` instead of mmedit's
``a + (b - a) * m``), so no ``interp_cfg`` makes it reproduce an mmedit run bit
for bit. This hook is mmagic's hook (mmengine method signatures, the same
gating, ``before_run`` check and ``state_dict`` update) with mmedit's
interpolation and defaults: ``interp_cfg=dict(momentum=0.999)`` means what it
meant in mmedit 0.x, nothing is range-checked, no momentum warning.

One runner difference is absorbed: mmcv 1.x loaded ``load_from``/``resume_from``
*before* ``before_run``, mmengine loads *after* it. When the hook itself creates a
missing EMA module in ``before_run`` (the deep-copy-with-warning path), mmedit's
copy was taken from the loaded generator and never from the checkpoint's
``*_ema`` entries (the fresh model had no such module, so loading skipped them).
This hook therefore re-takes that copy in ``before_train``, after mmengine
has loaded. An EMA module the model defines itself (``is_use_ema=True`` in
mmedit's Real-ESRGAN models) is loaded by both runners alike and left alone.
"""
from __future__ import annotations

import copy
from typing import List

from ..core.module_ema import source_key
from ..core.wrappers import unwrap
from ..mmagic.engine.hooks.ema import ExponentialMovingAverageHook as _MMagicHook
from ..mmedit.core.hooks.ema import ExponentialMovingAverageHook as _MMEditHook
from ..registry import HOOKS

__all__ = ['LegacyExponentialMovingAverageHook']


@HOOKS.register_module(scope='legacy')
class LegacyExponentialMovingAverageHook(_MMagicHook):
    """mmedit 0.16.1's ``ExponentialMovingAverageHook`` with mmengine's hook signatures.

    Arguments as :class:`compat_ema.mmedit.ExponentialMovingAverageHook`
    (``interp_cfg`` in mmedit's sense: ``momentum`` weighs the old EMA, default
    0.999; ``momentum_nontrainable`` default 0.0; ``interval`` default -1).
    """

    lerp = staticmethod(_MMEditHook.lerp)

    def before_run(self, runner) -> None:
        """As upstream; remembers which EMA modules it had to create."""
        model = unwrap(runner.model, self._generation)
        missing: List[str] = [k for k in self.module_keys if not hasattr(model, k)]
        super().before_run(runner)
        self._created = missing

    def before_train(self, runner) -> None:
        """Re-copy the EMA modules created in ``before_run`` from the (now loaded) source."""
        model = unwrap(runner.model, self._generation)
        for key in getattr(self, '_created', []):
            setattr(model, key, copy.deepcopy(getattr(model, source_key(key))))
        self._created = []
