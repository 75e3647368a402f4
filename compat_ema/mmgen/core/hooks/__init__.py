"""Mirror of ``mmgen.core.hooks`` (its EMA part)."""
from .ema_hook import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
