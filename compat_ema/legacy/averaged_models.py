"""Averaged models for mmengine that reproduce the legacy (mmcv 1.6 / mmdet 2.28) EMA numbers.

Driven by mmengine's ``EMAHook`` (the real one or :class:`compat_ema.mmengine.EMAHook`)
as its ``ema_type``, each class gives, bit for bit, the EMA values that the
named legacy hook produced in a legacy run:

================================  ===============================================
``ema_type``                      legacy hook reproduced
================================  ===============================================
``LegacyMMCVEMA``                 mmcv 1.6 ``EMAHook``
``LegacyMMDetEMA``                mmdet 2.28 ``BaseEMAHook`` (constant momentum)
``LegacyExpMomentumEMA``          mmdet 2.28 ``ExpMomentumEMAHook``
``LegacyLinearMomentumEMA``       mmdet 2.28 ``LinearMomentumEMAHook``
================================  ===============================================

What makes them legacy rather than mmengine:

* **initialisation**: the EMA is the clone taken at construction (mmengine's
  ``EMAHook.before_run``, the legacy hooks' ``before_run``). The first update
  *blends* ``(1-m)*clone + m*param``; mmengine's models *copy* at step 0.
* **the iteration**: the legacy formulas use the runner's 0-based global
  ``iter``. mmengine's ``EMAHook`` calls ``update_parameters(model)`` with no
  runner, so the iteration is taken from ``steps`` (the number of
  ``update_parameters`` calls so far). With ``begin_iter == begin_epoch == 0``
  (the default) the hook calls it once per training iteration, so
  ``steps == runner.iter`` at every call; ``steps`` is saved in
  ``ema_state_dict`` and restored on resume, so the equality survives a resume.
  ``begin_iter``/``begin_epoch`` > 0 break it (the hook copies instead of
  calling ``update_parameters`` before the start): do not use them with these
  types (:class:`~compat_ema.legacy.LegacyEMAHook` rejects them). Resuming from a
  checkpoint *without* ``ema_state_dict`` also breaks it (``steps`` restarts at
  0); :class:`~compat_ema.legacy.LegacyEMAHook` passes ``runner.iter``
  explicitly and is immune.
* **momentum and gating**: mmcv ``min(momentum**interval, (1+iter)/(warm_up+iter))``
  with updates when ``iter % interval == 0``; mmdet: the hook's momentum
  function of ``iter``, updates when ``(iter + 1) % interval == 0``. The update
  is ``ema.mul_(1 - m).add_(src, alpha=m)`` (not ``lerp_``).
* **which tensors**: mmcv averages parameters only. mmdet's ``skip_buffers=False``
  (the default) tracks the whole state dict: floating-point buffers are
  averaged, integer ones (``num_batches_tracked``) never change after the clone.
  This maps onto mmengine's ``update_buffers`` (``update_buffers = not
  skip_buffers``), so mmengine's val/test swap exchanges the same tensors the
  legacy hooks swap. When only parameters are tracked, buffers are copied from
  the model at every call (as mmengine does), so checkpoints and evaluation see
  the live buffers, as in the legacy runs.

Tied weights (one tensor under two state-dict names) are averaged once, which
gives the value the legacy hooks kept for each name until their first swap.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from ..core import kernels
from ..core.checks import require
from ..mmengine.model.averaged_model import BaseAveragedModel
from ..registry import MODELS

__all__ = ['LegacyAveragedModel', 'LegacyMMCVEMA', 'LegacyMMDetEMA', 'LegacyExpMomentumEMA',
           'LegacyLinearMomentumEMA']


class LegacyAveragedModel(BaseAveragedModel):
    """Base of the legacy-numerics averaged models (not registered).

    Subclasses define :meth:`should_update` (the gating rule) and
    :meth:`momentum_at` (the momentum formula), both functions of the 0-based
    global iteration.

    Args:
        model: the model to average; the EMA starts as a clone of it.
        interval: update gating period, a positive int.
        track_buffers: average the whole state dict (floating-point entries)
            instead of the parameters only.
        device: where to keep the copy. Defaults to the model's device.
    """

    def __init__(self, model: nn.Module, interval: int = 1, track_buffers: bool = False,
                 device: Optional[torch.device] = None) -> None:
        require(isinstance(interval, int) and not isinstance(interval, bool) and interval > 0,
                f'{type(self).__name__}: interval must be an int greater than 0, '
                f'but got {interval!r}')
        super().__init__(model, interval=interval, device=device,
                         update_buffers=bool(track_buffers))
        seen = set()
        self._float_keys: List[str] = []
        for key, value in self.avg_parameters.items():
            if not value.dtype.is_floating_point:
                continue  # integers are never averaged (mmdet 2.x)
            ident = (value.data_ptr(), value.dtype, tuple(value.shape)) if value.numel() else key
            if ident in seen:
                continue  # tied weights: average the shared tensor once
            seen.add(ident)
            self._float_keys.append(key)

    # -- the two legacy rules ------------------------------------------------
    def should_update(self, iteration: int) -> bool:  # pragma: no cover - abstract
        """Whether the legacy hook updated at 0-based global ``iteration``."""
        raise NotImplementedError

    def momentum_at(self, iteration: int) -> float:  # pragma: no cover - abstract
        """The momentum the legacy hook used at 0-based global ``iteration``."""
        raise NotImplementedError

    def avg_func(self, averaged_param, source_param, steps) -> None:
        """``averaged.mul_(1 - m).add_(source, alpha=m)`` with ``m = momentum_at(steps)``."""
        momentum = self.momentum_at(int(steps))
        averaged_param.mul_(1 - momentum).add_(source_param, alpha=momentum)

    # -- the update ----------------------------------------------------------
    def update_parameters(self, model: nn.Module, iteration: Optional[int] = None) -> None:
        """Average ``model`` into the EMA as the legacy hook did at ``iteration``.

        Args:
            model: the source model (already unwrapped).
            iteration: the runner's 0-based global iteration. Defaults to
                ``steps`` (what mmengine's ``EMAHook`` implies by calling with
                the model only; see the module docstring).

        A subclass that overrides :meth:`avg_func` gets it called per tensor, with
        the iteration as a long tensor, instead of the batched ``mul_``/``add_``.
        """
        it = int(self.steps) if iteration is None else int(iteration)
        if self.should_update(it):
            momentum = self.momentum_at(it)  # computed once, as the legacy hooks do
            src: Dict[str, torch.Tensor] = (model.state_dict() if self.update_buffers
                                            else dict(model.named_parameters()))
            missing = [k for k in self._float_keys if k not in src]
            require(not missing, f'{type(self).__name__}: the source model lacks {missing}; '
                                 'it is not the model this EMA was built from')
            averaged = [self.avg_parameters[k].data for k in self._float_keys]
            sources = [src[k].data.to(a.device) for k, a in zip(self._float_keys, averaged)]
            if type(self).avg_func is not LegacyAveragedModel.avg_func:
                steps = torch.tensor(it, dtype=torch.long)  # a subclass's own rule, per tensor
                for a, s in zip(averaged, sources):
                    self.avg_func(a, s, steps)
            else:
                kernels.mul_add_(averaged, sources, momentum)
        if not self.update_buffers:
            pairs = list(zip(self.module.buffers(), model.buffers()))
            kernels.copy_([b.data for b, _ in pairs], [s.data.to(b.device) for b, s in pairs])
        self.steps += 1


def _legacy_tracking(name: str, skip_buffers: bool, update_buffers: Optional[bool]) -> bool:
    """``skip_buffers`` -> tracked set; a contradicting mmengine ``update_buffers`` is an error."""
    track = not skip_buffers
    if update_buffers is not None:
        require(bool(update_buffers) == track,
                f'{name}: update_buffers={update_buffers!r} contradicts skip_buffers={skip_buffers!r}; '
                f'the legacy tracked set is set by skip_buffers (update_buffers = not skip_buffers)')
    return track


def _check_momentum(name: str, momentum: float) -> None:
    require(isinstance(momentum, (int, float)) and 0 < momentum < 1,
            f'{name}: momentum must be in the open interval (0, 1), but got {momentum!r}')


@MODELS.register_module(scope='legacy')
class LegacyMMCVEMA(LegacyAveragedModel):
    """mmcv 1.6 ``EMAHook`` numerics as an mmengine averaged model.

    Carries mmcv's quirks: the stored momentum is ``momentum ** interval``
    (smaller for larger intervals), the effective momentum
    ``min(momentum**interval, (1+iter)/(warm_up+iter))``, updates when
    ``iter % interval == 0`` (iterations 0, k, 2k, ...), parameters only.

    Args:
        model: the model to average.
        momentum: ``0 < momentum < 1``. Defaults to 0.0002.
        interval: update when ``iter % interval == 0``. Defaults to 1.
        warm_up: warm-up length of the momentum cap. Defaults to 100.
        device: where to keep the copy. Defaults to None.
        update_buffers: accepted only as False (mmcv averages parameters only).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, interval: int = 1,
                 warm_up: int = 100, device: Optional[torch.device] = None,
                 update_buffers: Optional[bool] = None) -> None:
        _check_momentum('LegacyMMCVEMA', momentum)
        require(not update_buffers, 'LegacyMMCVEMA: mmcv 1.6 EMAHook averages parameters only; '
                                    f'update_buffers must be False, got {update_buffers!r}')
        super().__init__(model, interval=interval, track_buffers=False, device=device)
        self.warm_up = warm_up
        self.momentum = momentum ** interval

    def should_update(self, iteration: int) -> bool:
        """mmcv: ``iter % interval == 0``."""
        return iteration % self.interval == 0

    def momentum_at(self, iteration: int) -> float:
        """``min(momentum**interval, (1 + iter) / (warm_up + iter))``."""
        return min(self.momentum, (1 + iteration) / (self.warm_up + iteration))


@MODELS.register_module(scope='legacy')
class LegacyMMDetEMA(LegacyAveragedModel):
    """mmdet 2.28 ``BaseEMAHook`` numerics: constant momentum (or ``momentum_fun(iter)``).

    Updates when ``(iter + 1) % interval == 0``; ``skip_buffers=False`` (the
    default) tracks the whole state dict, integer entries never averaged.

    Args:
        model: the model to average.
        momentum: ``0 < momentum < 1``. Defaults to 0.0002.
        interval: update when ``(iter + 1) % interval == 0``. Defaults to 1.
        skip_buffers: track parameters only. Defaults to False.
        momentum_fun: ``iter -> momentum``, as BaseEMAHook's. Defaults to None.
        device: where to keep the copy. Defaults to None.
        update_buffers: optional; must equal ``not skip_buffers`` if given.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, interval: int = 1,
                 skip_buffers: bool = False,
                 momentum_fun: Optional[Callable[[int], float]] = None,
                 device: Optional[torch.device] = None,
                 update_buffers: Optional[bool] = None) -> None:
        name = type(self).__name__
        _check_momentum(name, momentum)
        track = _legacy_tracking(name, skip_buffers, update_buffers)
        super().__init__(model, interval=interval, track_buffers=track, device=device)
        self.momentum = momentum
        self.skip_buffers = skip_buffers
        self.momentum_fun = momentum_fun

    def should_update(self, iteration: int) -> bool:
        """mmdet: ``(iter + 1) % interval == 0``."""
        return (iteration + 1) % self.interval == 0

    def momentum_at(self, iteration: int) -> float:
        """``momentum_fun(iter)`` if set, else the constant momentum."""
        return self.momentum_fun(iteration) if self.momentum_fun else self.momentum


@MODELS.register_module(scope='legacy')
class LegacyExpMomentumEMA(LegacyMMDetEMA):
    """mmdet 2.28 ``ExpMomentumEMAHook`` numerics: ``(1-m)*exp(-(1+iter)/total_iter) + m``.

    The mmdet 2.x YOLOX setup ``ExpMomentumEMAHook(momentum=0.0001, priority=49)``
    becomes ``EMAHook(ema_type='LegacyExpMomentumEMA', momentum=0.0001, priority=49)``.
    Unlike mmdet 3.x's ``ExpMomentumEMA`` the first update blends with the
    clone, the exponent uses the global iteration and ``total_iter`` keeps its name.

    Args:
        model: the model to average.
        momentum: the floor of the momentum. Defaults to 0.0002.
        total_iter: decay length in iterations. Defaults to 2000.
        interval, skip_buffers, device, update_buffers: as :class:`LegacyMMDetEMA`.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, total_iter: int = 2000,
                 interval: int = 1, skip_buffers: bool = False,
                 device: Optional[torch.device] = None,
                 update_buffers: Optional[bool] = None) -> None:
        super().__init__(model, momentum=momentum, interval=interval, skip_buffers=skip_buffers,
                         device=device, update_buffers=update_buffers)
        require(total_iter > 0, f'LegacyExpMomentumEMA: total_iter must be greater than 0, '
                                f'but got {total_iter!r}')
        self.total_iter = total_iter

    def momentum_at(self, iteration: int) -> float:
        """``(1 - momentum) * exp(-(1 + iter) / total_iter) + momentum``."""
        return (1 - self.momentum) * math.exp(-(1 + iteration) / self.total_iter) + self.momentum


@MODELS.register_module(scope='legacy')
class LegacyLinearMomentumEMA(LegacyMMDetEMA):
    """mmdet 2.28 ``LinearMomentumEMAHook`` numerics: ``min(m**interval, (1+iter)/(warm_up+iter))``.

    Args:
        model: the model to average.
        momentum: ``0 < momentum < 1``. Defaults to 0.0002.
        warm_up: warm-up length of the momentum cap. Defaults to 100.
        interval, skip_buffers, device, update_buffers: as :class:`LegacyMMDetEMA`.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, warm_up: int = 100,
                 interval: int = 1, skip_buffers: bool = False,
                 device: Optional[torch.device] = None,
                 update_buffers: Optional[bool] = None) -> None:
        super().__init__(model, momentum=momentum, interval=interval, skip_buffers=skip_buffers,
                         device=device, update_buffers=update_buffers)
        self.warm_up = warm_up

    def momentum_at(self, iteration: int) -> float:
        """``min(momentum ** interval, (1 + iter) / (warm_up + iter))``."""
        return min(self.momentum ** self.interval, (1 + iteration) / (self.warm_up + iteration))
