"""The mmagic 1.2.0 generation: ``ExponentialMovingAverageHook`` (mmengine runners).

Registered in the registry's ``mmagic`` scope (a child of ``mmengine``) as
``ExponentialMovingAverageHook``. Its ``momentum`` is the weight of the *new*
weights: mmedit 0.x's ``interp_cfg=dict(momentum=0.999)`` means
``momentum=0.001`` here (and even then the numbers differ in the last bits;
:class:`compat_ema.legacy.LegacyExponentialMovingAverageHook` keeps mmedit's).
See docs/gan-family.md.
"""
from .engine.hooks.ema import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
