"""Mirror of ``mmengine.model`` (its averaging part)."""
from ...core.wrappers import is_wrapper as _is_wrapper
from .averaged_model import (BaseAveragedModel, ExponentialMovingAverage, MomentumAnnealingEMA,
                             StochasticWeightAverage)


def is_model_wrapper(model) -> bool:
    """``mmengine.model.is_model_wrapper``: isinstance of a registered wrapper class."""
    return _is_wrapper(model, 'mmengine')


__all__ = ['BaseAveragedModel', 'ExponentialMovingAverage', 'MomentumAnnealingEMA',
           'StochasticWeightAverage', 'is_model_wrapper']
