"""Mirror of ``mmdet.core.hook`` (its EMA part)."""
from .ema import BaseEMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook

__all__ = ['BaseEMAHook', 'ExpMomentumEMAHook', 'LinearMomentumEMAHook']
