"""``mmyolo.models.layers.ema`` (mmyolo 0.6.0): ``ExpMomentumEMA``, reproduced bit for bit.

A subclass of mmdet 3.x's :class:`~compat_ema.mmdet3.ExpMomentumEMA` with its
own ``avg_func`` and ``update_parameters``. Quirks carried:

* it averages with ``lerp_(src, m)`` (mmengine's rounding), not mmdet 3.x's
  ``mul_``/``add_``; ``m`` is the same exponential momentum of ``steps``;
* the source tensors are cached at construction: ``model.state_dict()``
  (``update_buffers=True``) or ``dict(model.named_parameters())``; the
  ``model`` passed to :meth:`update_parameters` is ignored, and sources are
  never moved to the EMA's ``device``;
* with ``update_buffers=False`` the source buffers are ``model.buffers()``,
  a *generator* made once at construction: it is used up by the first
  update, so buffers are copied from the source on the first call only and
  then stay frozen (mmengine copies them on every call). The generator also
  makes the averaged model impossible to ``deepcopy``/pickle, as upstream.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ....core import kernels
from ....core.checks import require
from ....mmdet3.models.layers.ema import ExpMomentumEMA as MMDet3ExpMomentumEMA
from ....mmengine.model.averaged_model import BaseAveragedModel
from ....registry import MODELS

__all__ = ['ExpMomentumEMA']


class ExpMomentumEMA(MMDet3ExpMomentumEMA):
    """``mmyolo.models.layers.ExpMomentumEMA`` (mmyolo 0.6.0): exponential momentum, ``lerp_``,
    cached sources and a one-shot buffer iterator.

    Args:
        model: the model to average (its tensors are cached here).
        momentum: the floor of the momentum, ``0 < momentum < 1``. Defaults to 0.0002.
        gamma: decay length of the momentum in update calls, > 0. Defaults to 2000.
        interval: average every ``interval`` update calls. Defaults to 1.
        device: where to keep the copy. Defaults to None.
        update_buffers: average the whole state dict (True) or sync buffers
            (False: on the first update only, the quirk). Defaults to False.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 2000,
                 interval=1, device: Optional[torch.device] = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model=model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)
        require(gamma > 0, f'{type(self).__name__}: gamma must be greater than 0, '
                           f'but got {gamma!r}')
        self.gamma = gamma
        # upstream caches the sources once, "most models do not change their structure"
        self.src_parameters = (model.state_dict() if self.update_buffers
                               else dict(model.named_parameters()))
        if not self.update_buffers:
            self.src_buffers = model.buffers()  # a generator: used up by the first update

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        """``averaged.lerp_(source, m)`` with ``m = current_momentum(steps)``."""
        averaged_param.lerp_(source_param, self.current_momentum(steps))

    def _avg_many(self, averaged: List[Tensor], sources: List[Tensor], steps) -> None:
        if type(self).avg_func is not ExpMomentumEMA.avg_func:
            return BaseAveragedModel._avg_many(self, averaged, sources, steps)
        kernels.lerp_(averaged, sources, self.current_momentum(steps))

    def update_parameters(self, model: nn.Module) -> None:
        """Copy (first call) or average (every ``interval`` calls) the *cached* sources.

        ``model`` is accepted and ignored, as upstream.
        """
        if self.steps == 0:
            keys = list(self.avg_parameters)
            kernels.copy_([self.avg_parameters[k].data for k in keys],
                          [self.src_parameters[k].data for k in keys])
        elif self.steps % self.interval == 0:
            averaged, sources = [], []
            for k, p_avg in self.avg_parameters.items():
                if p_avg.dtype.is_floating_point:
                    averaged.append(p_avg.data)
                    sources.append(self.src_parameters[k].data)
            self._avg_many(averaged, sources, self.steps)
        if not self.update_buffers:
            # zip pulls from module.buffers() first, exactly as upstream's loop:
            # once src_buffers is exhausted nothing more is copied.
            pairs = list(zip(self.module.buffers(), self.src_buffers))
            kernels.copy_([b.data for b, _ in pairs], [s.data for _, s in pairs])
        self.steps += 1


MODELS.register_module(scope='mmyolo', module=ExpMomentumEMA)
MODELS.register_module(name='MMYOLOExpMomentumEMA', scope='mmengine', module=ExpMomentumEMA)
