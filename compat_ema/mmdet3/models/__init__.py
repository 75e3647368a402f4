"""Mirror of ``mmdet.models`` (mmdet 3.3.0), its EMA part."""
from .layers import ExpMomentumEMA

__all__ = ['ExpMomentumEMA']
