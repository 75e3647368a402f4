"""Legacy EMA numbers under mmengine: the ``legacy`` registry scope (a child of ``mmengine``).

* Averaged models usable as mmengine ``ema_type`` that reproduce, driven by
  mmengine's ``EMAHook``, the EMA values of mmcv 1.6 ``EMAHook``
  (:class:`LegacyMMCVEMA`) and mmdet 2.28's hooks (:class:`LegacyMMDetEMA`,
  :class:`LegacyExpMomentumEMA`, :class:`LegacyLinearMomentumEMA`).
* :class:`LegacyEMAHook`: an mmengine hook that also keeps the legacy swap
  points (the model holds the EMA weights after training).
* :class:`LegacyExponentialMovingAverageHook`: mmedit 0.16's GAN/restoration
  EMA hook (``generator_ema``) with its numbers, under mmengine.

With the real mmengine, name them in configs after
``custom_imports=dict(imports=['compat_ema.integrations.mmengine_plugin'])``;
with compat_ema's own registry, as ``'legacy.LegacyMMCVEMA'`` etc. See
MIGRATION.md, "Keeping legacy EMA numbers under mmengine".
"""
from .averaged_models import (LegacyAveragedModel, LegacyExpMomentumEMA,
                              LegacyLinearMomentumEMA, LegacyMMCVEMA, LegacyMMDetEMA)
from .gan_hook import LegacyExponentialMovingAverageHook
from .hook import LegacyEMAHook

__all__ = ['LegacyAveragedModel', 'LegacyMMCVEMA', 'LegacyMMDetEMA', 'LegacyExpMomentumEMA',
           'LegacyLinearMomentumEMA', 'LegacyEMAHook', 'LegacyExponentialMovingAverageHook']
