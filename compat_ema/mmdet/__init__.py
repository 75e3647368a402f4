"""The mmdet 2.28 generation: ``BaseEMAHook``, ``ExpMomentumEMAHook``, ``LinearMomentumEMAHook``."""
from .core.hook import BaseEMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook

__all__ = ['BaseEMAHook', 'ExpMomentumEMAHook', 'LinearMomentumEMAHook']
