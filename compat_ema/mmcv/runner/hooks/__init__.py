"""Mirror of ``mmcv.runner.hooks``: ``Hook`` and ``EMAHook``."""
from .ema import EMAHook
from .hook import Hook

__all__ = ['EMAHook', 'Hook']
