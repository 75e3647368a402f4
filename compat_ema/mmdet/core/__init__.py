"""Mirror of ``mmdet.core`` (its EMA hooks)."""
from .hook import BaseEMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook

__all__ = ['BaseEMAHook', 'ExpMomentumEMAHook', 'LinearMomentumEMAHook']
