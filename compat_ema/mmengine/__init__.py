"""The mmengine 0.10.7 generation: ``EMAHook`` and the averaged models."""
from .hooks import EMAHook, Hook
from .model import (BaseAveragedModel, ExponentialMovingAverage, MomentumAnnealingEMA,
                    StochasticWeightAverage)

__all__ = ['EMAHook', 'Hook', 'BaseAveragedModel', 'ExponentialMovingAverage',
           'MomentumAnnealingEMA', 'StochasticWeightAverage']
