"""The mmgen 0.7.3 generation: ``ExponentialMovingAverageHook`` with momentum policies.

Registered in the registry's ``mmgen`` scope (a child of ``mmcv``). mmedit
0.16's hook plus ``momentum_policy='rampup'`` (StyleGAN3's EMA ramp-up) and a
stricter ``interp_mode`` check. See docs/gan-family.md.
"""
from .core.hooks.ema_hook import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
