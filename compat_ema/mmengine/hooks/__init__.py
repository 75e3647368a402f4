"""Mirror of ``mmengine.hooks`` (its EMA part): ``Hook`` and ``EMAHook``."""
from .ema_hook import EMAHook
from .hook import Hook

__all__ = ['EMAHook', 'Hook']
