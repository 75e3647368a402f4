"""The mmdet 3.3.0 generation: ``ExpMomentumEMA``, the native target of mmdet 2.x ``ExpMomentumEMAHook``.

Registered in the registry's ``mmdet3`` scope as ``ExpMomentumEMA`` and in the
``mmengine`` scope as ``MMDet3ExpMomentumEMA``, so both
``dict(type='EMAHook', ema_type='mmdet3.ExpMomentumEMA')`` and
``ema_type='MMDet3ExpMomentumEMA'`` work with :class:`compat_ema.mmengine.EMAHook`.
:mod:`compat_ema.migrate.native_gap` measures the gap to a legacy run.
"""
from .models.layers.ema import ExpMomentumEMA, exp_momentum

__all__ = ['ExpMomentumEMA', 'exp_momentum']
