"""Mirror of ``mmgen.core`` (its EMA part)."""
from .hooks import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
