"""Mirror of ``mmdet.models.layers`` (mmdet 3.3.0), its EMA part."""
from .ema import ExpMomentumEMA

__all__ = ['ExpMomentumEMA']
