"""Mirror of ``mmedit.core.hooks`` (its EMA part)."""
from .ema import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
