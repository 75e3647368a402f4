"""``mmengine.model.averaged_model`` (mmengine 0.10.7), reproduced bit for bit.

``BaseAveragedModel``, ``ExponentialMovingAverage``, ``MomentumAnnealingEMA``
and ``StochasticWeightAverage``. Quirks carried (docs/upstream-quirks.md quirks 3, 14-16):

* the averaged model is a ``deepcopy`` with ``requires_grad`` off, plus a long
  buffer ``steps``; the first ``update_parameters`` call (``steps == 0``)
  *copies* every tracked entry, integers included;
* later calls average when ``steps % interval == 0`` (``interval`` counts
  update calls, not iterations), floating-point entries only;
* ``update_buffers=False`` copies every buffer from the source on each call;
  ``update_buffers=True`` tracks the whole state dict, so integer buffers stay
  frozen at the first copy;
* EMA uses ``lerp_(src, momentum)``; MomentumAnnealingEMA uses
  ``max(momentum, gamma / (gamma + steps.item()))``; SWA uses
  ``add_(src - avg, alpha=1 / (steps // interval + 1))``.

Subclasses that override only ``avg_func`` keep working: the multi-tensor
fast path is used only for the built-in ``avg_func`` implementations.
"""
from __future__ import annotations

import logging
import operator
import weakref
from abc import abstractmethod
from copy import deepcopy
from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..._compat_registry import MMENGINE_MODELS
from ...core import kernels, torch_features
from ...core.checks import require
from ...core.structure import ModuleSnapshot

_LOG = logging.getLogger('compat_ema.mmengine')
_DEVICE = operator.attrgetter('device')
_IS_CPU = torch_features.is_cpu   # Tensor.is_cpu, or the device type on torch < 1.11


class BaseAveragedModel(nn.Module):
    """``mmengine.model.BaseAveragedModel``: a frozen deepcopy plus ``steps``.

    Args:
        model: the model to average.
        interval: average every ``interval`` update calls. Defaults to 1.
        device: where to keep the copy. Defaults to None (the model's device).
        update_buffers: also average buffers (the whole state dict). Defaults to False.
    """

    steps: Tensor  # a registered buffer (long scalar)

    def __init__(self, model: nn.Module, interval: int = 1,
                 device: Optional[torch.device] = None, update_buffers: bool = False) -> None:
        super().__init__()
        self.module = deepcopy(model).requires_grad_(False)
        self.interval = interval
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer('steps', torch.tensor(0, dtype=torch.long, device=device))
        self.update_buffers = update_buffers
        if update_buffers:
            self.avg_parameters = self.module.state_dict()
        else:
            self.avg_parameters = dict(self.module.named_parameters())

    @abstractmethod
    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """Average ``source_param`` into ``averaged_param`` in place."""

    def _avg_many(self, averaged: List[Tensor], sources: List[Tensor], steps: Tensor) -> None:
        """Apply ``avg_func`` to each pair; built-in subclasses batch it."""
        for avg, src in zip(averaged, sources):
            self.avg_func(avg, src, steps)  # type: ignore[arg-type]  # upstream passes the tensor

    def __getstate__(self):
        """Pickle/deepcopy without the cached fast-path plan (it references the source model)."""
        state = self.__dict__.copy()
        state.pop('_compat_plan', None)
        return state

    def forward(self, *args, **kwargs):
        """Run the averaged copy."""
        return self.module(*args, **kwargs)

    def _avg_pairs(self, pairs: kernels.TensorPairs, steps: Tensor) -> None:
        """Average ``pairs.src`` into ``pairs.dst``; built-in subclasses use the pairs' kernels."""
        self._avg_many([t.data for t in pairs.dst], [t.data for t in pairs.src], steps)

    def _fast_plan(self, model: nn.Module):
        """The cached tensor pairs for ``model`` if they still hold, else None.

        Cached (``update_buffers=False`` only): the ``Parameter`` objects found
        under ``avg_parameters``' keys in ``model.named_parameters()``, and the
        ``(self.module.buffers(), model.buffers())`` pairs. A call that walks
        ``named_parameters()`` and both ``buffers()`` as upstream does uses the
        plan only if they yield the very same objects (identity, C-level checks),
        in the same order, all on one device (upstream's ``.to(device)`` is then a
        no-op). Anything else (a replaced or added parameter or buffer, a moved
        tensor, a missing key) takes the per-call path, which behaves as upstream.

        The walks themselves are skipped while a
        :class:`~compat_ema.core.structure.ModuleSnapshot` of both trees (taken when
        the plan was last confirmed by a walk) proves that no module's parameter,
        buffer or submodule dict changed: the walks would then yield the very same
        objects. The device check still runs on every call.
        """
        plan = self.__dict__.get('_compat_plan')
        if plan is not None and plan['model']() is model and plan['avg_dict'] is self.avg_parameters \
                and plan['snaps'] is not None and tuple(self.avg_parameters) == plan['keys_t'] \
                and tuple(map(id, self.avg_parameters.values())) == plan['avg_ids'] \
                and plan['snaps'][0].unchanged() and plan['snaps'][1].unchanged():
            return self._on_one_device(plan)
        named = dict(model.named_parameters())
        keys = list(self.avg_parameters)
        try:
            src = operator.itemgetter(*keys)(named) if keys else ()
        except KeyError:
            return None
        if len(keys) == 1:
            src = (src,)
        avg_bufs = tuple(self.module.buffers())
        src_bufs = tuple(model.buffers())
        if plan is None or plan['keys'] != keys or plan['avg_dict'] is not self.avg_parameters \
                or len(plan['src']) != len(src) or not all(map(operator.is_, plan['src'], src)) \
                or len(plan['avg_bufs']) != len(avg_bufs) or len(plan['src_bufs']) != len(src_bufs) \
                or not all(map(operator.is_, plan['avg_bufs'], avg_bufs)) \
                or not all(map(operator.is_, plan['src_bufs'], src_bufs)):
            avg = [self.avg_parameters[k] for k in keys]
            floating = [i for i, a in enumerate(avg) if a.dtype.is_floating_point]
            nb = min(len(avg_bufs), len(src_bufs))
            plan = dict(keys=keys, avg_dict=self.avg_parameters, src=src, avg_bufs=avg_bufs,
                        src_bufs=src_bufs, avg=tuple(avg),
                        copy=kernels.TensorPairs(avg, src),
                        avg_floating=kernels.TensorPairs(
                            [avg[i] for i in floating],
                            [src[i] for i in floating]).flatten_small_destinations(),
                        bufs=kernels.TensorPairs(avg_bufs[:nb], src_bufs[:nb]))
            self.__dict__['_compat_plan'] = plan
        # confirmed by the walks just now: snapshot both trees for the next calls
        snaps = ModuleSnapshot.take(model), ModuleSnapshot.take(self.module)
        plan.update(model=weakref.ref(model), keys_t=tuple(keys),
                    avg_ids=tuple(map(id, self.avg_parameters.values())),
                    snaps=snaps if None not in snaps else None)
        return self._on_one_device(plan)

    @staticmethod
    def _on_one_device(plan):
        if all(map(_IS_CPU, plan['avg'])) and all(map(_IS_CPU, plan['src'])) \
                and all(map(_IS_CPU, plan['avg_bufs'])) and all(map(_IS_CPU, plan['src_bufs'])):
            return plan  # the common case, checked without building device objects
        devices = set(map(_DEVICE, plan['avg']))
        devices.update(map(_DEVICE, plan['src']))
        devices.update(map(_DEVICE, plan['avg_bufs']))
        devices.update(map(_DEVICE, plan['src_bufs']))
        return plan if len(devices) <= 1 else None

    def update_parameters(self, model: nn.Module) -> None:
        """Copy (first call) or average (every ``interval`` calls) ``model`` into the copy."""
        if not self.update_buffers and kernels.fast_path_enabled():
            plan = self._fast_plan(model)
            if plan is not None:
                if self.steps == 0:
                    plan['copy'].copy_()
                elif self.steps % self.interval == 0:
                    self._avg_pairs(plan['avg_floating'], self.steps)
                plan['bufs'].copy_()
                self.steps += 1
                return
        src_parameters = (model.state_dict() if self.update_buffers
                          else dict(model.named_parameters()))
        if self.steps == 0:
            keys = list(self.avg_parameters)
            kernels.copy_([self.avg_parameters[k].data for k in keys],
                          [src_parameters[k].data for k in keys])
        elif self.steps % self.interval == 0:
            averaged, sources = [], []
            for k, p_avg in self.avg_parameters.items():
                if p_avg.dtype.is_floating_point:
                    averaged.append(p_avg.data)
                    sources.append(src_parameters[k].data.to(p_avg.device))
            self._avg_many(averaged, sources, self.steps)
        if not self.update_buffers:
            pairs = list(zip(self.module.buffers(), model.buffers()))
            kernels.copy_([b.data for b, _ in pairs], [s.data.to(b.device) for b, s in pairs])
        self.steps += 1


@MMENGINE_MODELS.register_module()
class StochasticWeightAverage(BaseAveragedModel):
    """``mmengine.model.StochasticWeightAverage``: ``avg += (src - avg) / (steps // interval + 1)``."""

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        averaged_param.add_(source_param - averaged_param,
                            alpha=1 / float(steps // self.interval + 1))

    def _avg_many(self, averaged, sources, steps) -> None:
        if type(self).avg_func is not StochasticWeightAverage.avg_func:
            return super()._avg_many(averaged, sources, steps)
        kernels.swa_add_(averaged, sources, 1 / float(steps // self.interval + 1))

    def _avg_pairs(self, pairs, steps) -> None:
        if type(self).avg_func is not StochasticWeightAverage.avg_func or \
                type(self)._avg_many is not StochasticWeightAverage._avg_many:
            return super()._avg_pairs(pairs, steps)
        pairs.swa_add_(1 / float(steps // self.interval + 1))


@MMENGINE_MODELS.register_module()
class ExponentialMovingAverage(BaseAveragedModel):
    """``mmengine.model.ExponentialMovingAverage``: ``avg.lerp_(src, momentum)``.

    Args:
        model: the model to average.
        momentum: ``0 < momentum < 1``; warns above 0.5 (it is 1 - decay). Defaults to 0.0002.
        interval, device, update_buffers: as :class:`BaseAveragedModel`.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, interval: int = 1,
                 device: Optional[torch.device] = None, update_buffers: bool = False) -> None:
        super().__init__(model, interval, device, update_buffers)
        require(0.0 < momentum < 1.0,
                f'{type(self).__name__}: momentum must be in range (0.0, 1.0), but got {momentum!r}')
        if momentum > 0.5:
            _LOG.warning('The value of momentum in EMA is usually a small number,which is '
                         'different from the conventional notion of momentum but got %s. '
                         'Please make sure the value is correct.', momentum)
        self.momentum = momentum

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        averaged_param.lerp_(source_param, self.momentum)

    def _avg_many(self, averaged, sources, steps) -> None:
        if type(self).avg_func is not ExponentialMovingAverage.avg_func:
            return super()._avg_many(averaged, sources, steps)
        kernels.lerp_(averaged, sources, self.momentum)

    def _avg_pairs(self, pairs, steps) -> None:
        if type(self).avg_func is not ExponentialMovingAverage.avg_func or \
                type(self)._avg_many is not ExponentialMovingAverage._avg_many:
            return super()._avg_pairs(pairs, steps)
        pairs.lerp_(self.momentum)


@MMENGINE_MODELS.register_module()
class MomentumAnnealingEMA(ExponentialMovingAverage):
    """``mmengine.model.MomentumAnnealingEMA``: ``lerp_`` with ``max(momentum, gamma/(gamma+steps))``.

    Args:
        model: the model to average.
        momentum: the floor of the momentum. Defaults to 0.0002.
        gamma: annealing length, > 0. Defaults to 100.
        interval, device, update_buffers: as :class:`BaseAveragedModel`.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 100,
                 interval: int = 1, device: Optional[torch.device] = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model=model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)
        require(gamma > 0, f'MomentumAnnealingEMA: gamma must be greater than 0, but got {gamma!r}')
        self.gamma = gamma

    def annealed_momentum(self) -> float:
        """``max(momentum, gamma / (gamma + steps.item()))``, as upstream computes it."""
        return max(self.momentum, self.gamma / (self.gamma + self.steps.item()))

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        averaged_param.lerp_(source_param, self.annealed_momentum())

    def _avg_many(self, averaged, sources, steps) -> None:
        if type(self).avg_func is not MomentumAnnealingEMA.avg_func:
            return BaseAveragedModel._avg_many(self, averaged, sources, steps)
        kernels.lerp_(averaged, sources, self.annealed_momentum())

    def _avg_pairs(self, pairs, steps) -> None:
        if type(self).avg_func is not MomentumAnnealingEMA.avg_func or \
                type(self)._avg_many is not MomentumAnnealingEMA._avg_many:
            return BaseAveragedModel._avg_pairs(self, pairs, steps)
        pairs.lerp_(self.annealed_momentum())
