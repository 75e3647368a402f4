"""The mmcv 1.6 generation: ``compat_ema.mmcv.EMAHook`` (== ``mmcv.runner.hooks.EMAHook``)."""
from .runner import EMAHook, Hook, Priority, get_priority

__all__ = ['EMAHook', 'Hook', 'Priority', 'get_priority']
