"""The mmedit 0.16.1 generation: ``ExponentialMovingAverageHook`` (mmcv 1.x runners).

Registered in the registry's ``mmedit`` scope (a child of ``mmcv``) as
``ExponentialMovingAverageHook``: ``HOOKS.build(dict(type='mmedit.ExponentialMovingAverageHook',
module_keys=('generator_ema',), interval=1, interp_cfg=dict(momentum=0.999)))``.
Its ``momentum`` is the weight of the *old* EMA; mmagic 1.x flipped it
(:mod:`compat_ema.mmagic`). See docs/gan-family.md.
"""
from .core.hooks.ema import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
