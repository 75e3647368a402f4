"""Mirror of ``mmyolo.models`` (mmyolo 0.6.0), its EMA part."""
from .layers import ExpMomentumEMA

__all__ = ['ExpMomentumEMA']
