"""Mirror of ``mmagic.engine`` (its EMA part)."""
from .hooks import ExponentialMovingAverageHook

__all__ = ['ExponentialMovingAverageHook']
