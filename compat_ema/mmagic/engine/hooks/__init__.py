"""Mirror of ``mmagic.engine.hooks`` (its EMA part)."""
from .ema import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
