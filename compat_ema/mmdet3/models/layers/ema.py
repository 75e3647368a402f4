"""``mmdet.models.layers.ema`` (mmdet 3.3.0): ``ExpMomentumEMA``, reproduced bit for bit.

The mmdet 3.x migration target of mmdet 2.x ``ExpMomentumEMAHook`` (YOLOX's
``dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001,
update_buffers=True, priority=49)``). It is mmengine's
:class:`~compat_ema.mmengine.model.ExponentialMovingAverage` with a different
averaging function. Quirks carried:

* the momentum is ``(1 - momentum) * exp(-float(1 + steps) / gamma) + momentum``
  where ``steps`` is the averaged model's own ``steps`` tensor (the number of
  ``update_parameters`` calls so far), not the runner's iteration: it starts
  again at 0 whenever the EMA is rebuilt (``load_from`` without resume);
* it averages with ``mul_(1 - m).add_(src, alpha=m)`` (mmdet 2.x's rounding),
  not mmengine's ``lerp_``;
* everything else is mmengine's ``BaseAveragedModel``: the first call copies,
  ``interval`` counts calls, ``update_buffers=False`` (the default, unlike
  mmdet 2.x's ``skip_buffers=False``) copies buffers on every call.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ....core import kernels
from ....core.checks import require
from ....mmengine.model.averaged_model import BaseAveragedModel, ExponentialMovingAverage
from ....registry import MODELS

__all__ = ['ExpMomentumEMA', 'exp_momentum']


def exp_momentum(momentum: float, gamma, steps) -> float:
    """mmdet 3.x's annealed momentum: ``(1 - momentum) * exp(-float(1 + steps) / gamma) + momentum``.

    ``steps`` may be the averaged model's long tensor or an int; the
    expression is evaluated exactly as upstream writes it (Python doubles).
    """
    return (1 - momentum) * math.exp(-float(1 + steps) / gamma) + momentum


class ExpMomentumEMA(ExponentialMovingAverage):
    """``mmdet.models.layers.ExpMomentumEMA`` (mmdet 3.3.0): exponential momentum, ``mul_``/``add_``.

    Args:
        model: the model to average.
        momentum: the floor of the momentum, ``0 < momentum < 1``. Defaults to 0.0002.
        gamma: decay length of the momentum in update calls, > 0. Defaults to 2000.
        interval: average every ``interval`` update calls. Defaults to 1.
        device: where to keep the copy. Defaults to None.
        update_buffers: average the whole state dict (True) or copy buffers on
            every call (False). Defaults to False.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 2000,
                 interval=1, device: Optional[torch.device] = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model=model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)
        require(gamma > 0, f'{type(self).__name__}: gamma must be greater than 0, '
                           f'but got {gamma!r}')
        self.gamma = gamma

    def current_momentum(self, steps) -> float:
        """The momentum used by the average at ``steps`` (see :func:`exp_momentum`)."""
        return exp_momentum(self.momentum, self.gamma, steps)

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        """``averaged.mul_(1 - m).add_(source, alpha=m)`` with ``m = current_momentum(steps)``."""
        momentum = self.current_momentum(steps)
        averaged_param.mul_(1 - momentum).add_(source_param, alpha=momentum)

    def _avg_many(self, averaged: List[Tensor], sources: List[Tensor], steps) -> None:
        if type(self).avg_func is not ExpMomentumEMA.avg_func:
            return BaseAveragedModel._avg_many(self, averaged, sources, steps)
        kernels.mul_add_(averaged, sources, self.current_momentum(steps))


MODELS.register_module(scope='mmdet3', module=ExpMomentumEMA)
MODELS.register_module(name='MMDet3ExpMomentumEMA', scope='mmengine', module=ExpMomentumEMA)
