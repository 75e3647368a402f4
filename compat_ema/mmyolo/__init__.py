"""The mmyolo 0.6.0 generation: ``ExpMomentumEMA`` (mmdet 3.x's, with ``lerp_`` and cached sources).

Registered in the registry's ``mmyolo`` scope as ``ExpMomentumEMA`` and in the
``mmengine`` scope as ``MMYOLOExpMomentumEMA``, so both
``dict(type='EMAHook', ema_type='mmyolo.ExpMomentumEMA')`` and
``ema_type='MMYOLOExpMomentumEMA'`` work with :class:`compat_ema.mmengine.EMAHook`.
"""
from .models.layers.ema import ExpMomentumEMA

__all__ = ['ExpMomentumEMA']
