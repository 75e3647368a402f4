"""Mirror of ``mmyolo.models.layers`` (mmyolo 0.6.0), its EMA part."""
from .ema import ExpMomentumEMA

__all__ = ['ExpMomentumEMA']
