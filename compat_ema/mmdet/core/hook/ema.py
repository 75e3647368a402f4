"""``mmdet.core.hook.ema`` (mmdet 2.28.2): BaseEMAHook, ExpMomentumEMAHook,
LinearMomentumEMAHook, reproduced bit for bit.

Quirks carried (docs/upstream-quirks.md quirks 2, 3, 6-9; docs/runner-behaviour.md#mmdet-classes,
#mmdet-before-run, #mmdet-update, #mmdet-swap, #mmdet-checkpoint, #resume-matrix):

* updates happen when ``(runner.iter + 1) % interval == 0`` (iterations k-1,
  2k-1, ...), unlike mmcv's ``iter % interval``; the momentum is *not* raised
  to ``interval`` except in LinearMomentumEMAHook's formula.
* ``skip_buffers=False`` (the default) tracks the whole ``model.state_dict()``
  (buffers, integer ``num_batches_tracked`` and tied weights listed twice
  included); integer entries are swapped every epoch but never averaged, so
  the model's ``num_batches_tracked`` shows its ``before_run`` value after training.
* the momentum function receives the 0-based ``runner.iter``;
  ExpMomentum: ``(1-m)*exp(-(1+iter)/total_iter) + m``; Linear:
  ``min(m**interval, (1+iter)/(warm_up+iter))``.
* no check on ``interval`` (0 fails with ZeroDivisionError at the first
  update, as upstream); ``BaseEMAHook`` is not registered, as upstream.
* ``resume_from`` resumes inside ``before_run``; the runner-level
  ``resume_from`` runs before it and drops the ``ema_*`` keys (the resume
  matrix in docs/runner-behaviour.md#resume-matrix; see :mod:`compat_ema.doctor`).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch

from ...._compat_registry import MMDET_HOOKS
from ....core import kernels, swap
from ....core.checks import require
from ....core.torch_features import get_submodule
from ....core.wrappers import unwrap
from ....mmcv.runner.hooks.hook import Hook


class BaseEMAHook(Hook):
    """``mmdet.core.hook.ema.BaseEMAHook``: constant momentum unless ``momentum_fun`` is given.

    Args:
        momentum: update weight, ``0 < momentum < 1``. Defaults to 0.0002.
        interval: update when ``(iter + 1) % interval == 0``. Defaults to 1.
        skip_buffers: track parameters only (True) or the whole state dict. Defaults to False.
        resume_from: checkpoint to resume in ``before_run``. Defaults to None.
        momentum_fun: ``iter -> momentum``. Defaults to None.
    """

    def __init__(self, momentum: float = 0.0002, interval: int = 1, skip_buffers: bool = False,
                 resume_from: Optional[str] = None,
                 momentum_fun: Optional[Callable[[int], float]] = None):
        require(0 < momentum < 1,
                f'{type(self).__name__}: momentum must be in the open interval (0, 1), '
                f'but got {momentum!r}')
        self.momentum = momentum
        self.skip_buffers = skip_buffers
        self.interval = interval
        self.checkpoint = resume_from
        self.momentum_fun = momentum_fun

    def before_run(self, runner) -> None:
        """Register an ``ema_*`` clone for every tracked tensor; resume if asked."""
        model = unwrap(runner.model, 'mmcv')
        self.param_ema_buffer: Dict[str, str] = {}
        if self.skip_buffers:
            self.model_parameters = dict(model.named_parameters())
        else:
            self.model_parameters = model.state_dict()
        for name, value in self.model_parameters.items():
            buffer_name = f"ema_{name.replace('.', '_')}"
            self.param_ema_buffer[name] = buffer_name
            model.register_buffer(buffer_name, value.data.clone())
        self.model_buffers = dict(model.named_buffers())
        self._compat_model = model
        if self.checkpoint is not None:
            runner.resume(self.checkpoint)

    def get_momentum(self, runner) -> float:
        """``momentum_fun(runner.iter)`` if set, else the constant momentum."""
        return self.momentum_fun(runner.iter) if self.momentum_fun else self.momentum

    def after_train_iter(self, runner) -> None:
        """Update floating-point entries when ``(runner.iter + 1) % interval == 0``."""
        if (runner.iter + 1) % self.interval != 0:
            return
        momentum = self.get_momentum(runner)
        self._ema_pairs()[1].mul_add_(momentum)

    def after_train_epoch(self, runner) -> None:
        """Load the EMA values into the model (before the EvalHook)."""
        self._swap_ema_parameters()

    def before_train_epoch(self, runner) -> None:
        """Restore the raw values after last epoch's evaluation."""
        self._swap_ema_parameters()

    def _ema_pairs(self):
        """``(all pairs, floating-point pairs)`` of (ema buffer, tracked tensor), built once.

        Cached: the objects upstream's loop reads from ``model_buffers`` and
        ``model_parameters`` (for ``skip_buffers=False`` these are the detached
        ``state_dict()`` aliases taken in ``before_run``, as upstream keeps them).
        Rebuilt when one of those dicts (or ``param_ema_buffer``) is replaced or
        changes size; the floating-point filter is re-run then. The hook owns
        the ``ema_*`` buffers, so the fast path may gather the small ones into
        one flat buffer (:meth:`~compat_ema.core.kernels.TensorPairs.flatten_small_destinations`).
        """
        key = tuple((id(d), len(d)) for d in (self.model_parameters, self.model_buffers,
                                               self.param_ema_buffer))
        if getattr(self, '_pairs_key', None) != key:
            names = list(self.model_parameters)
            ema = [self.model_buffers[self.param_ema_buffer[n]] for n in names]
            vals = [self.model_parameters[n] for n in names]
            floating = [i for i, v in enumerate(vals) if v.dtype.is_floating_point]
            self._pairs = (kernels.TensorPairs(ema, vals),
                           kernels.TensorPairs([ema[i] for i in floating],
                                               [vals[i] for i in floating]).flatten_small_destinations())
            self._pairs_key = key
        return self._pairs

    def _owners(self, vals):
        """The module-owned tensors the tracked entries alias, where they can be found.

        ``state_dict()`` hands out detached aliases; exchanging the storage of an
        alias alone would leave the real parameter untouched, so the owner (the
        ``Parameter`` or registered buffer it aliases) is exchanged and the alias
        re-pointed. Only entries large enough to be exchanged are resolved (the
        module lookup is cached; the owner is re-read and must still alias the
        entry). Any other entry keeps its alias, which
        :func:`compat_ema.core.kernels.swap_` copies in place, as upstream does.
        """
        model = getattr(self, '_compat_model', None)
        out = list(vals)
        if model is None:
            return out
        where = self.__dict__.setdefault('_owner_where', {})
        names = list(self.model_parameters)
        for i, numel in enumerate(map(torch.Tensor.numel, vals)):
            if numel < swap.EXCHANGE_MIN_NUMEL:
                continue
            name, val = names[i], vals[i]
            owner = None
            if name not in where:
                prefix, _, attr = name.rpartition('.')
                try:
                    where[name] = (get_submodule(model, prefix), attr)   # any torch >= 1.8
                except AttributeError:
                    where[name] = None
            if where[name] is not None:
                module, attr = where[name]
                owner = module._parameters.get(attr, module._buffers.get(attr))
            if owner is not None and owner is not val and \
                    owner.data_ptr() == val.data_ptr() and owner.shape == val.shape and \
                    owner.stride() == val.stride() and owner.dtype == val.dtype:
                out[i] = owner
        return out

    def _swap_ema_parameters(self) -> None:
        """Exchange every tracked entry with its ``ema_*`` buffer, integers included."""
        pairs, floating = self._ema_pairs()
        kernels.swap_(self._owners(pairs.src), pairs.dst, aliases=pairs.src, pairs=floating)


@MMDET_HOOKS.register_module()
class ExpMomentumEMAHook(BaseEMAHook):
    """``mmdet.core.hook.ema.ExpMomentumEMAHook``: ``(1-m)*exp(-(1+iter)/total_iter) + m``.

    Args:
        total_iter: decay length of the momentum. Defaults to 2000.
        **kwargs: BaseEMAHook arguments.
    """

    def __init__(self, total_iter: int = 2000, **kwargs):
        super().__init__(**kwargs)
        self.total_iter = total_iter
        self.momentum_fun = lambda x: (1 - self.momentum) * math.exp(
            -(1 + x) / total_iter) + self.momentum


@MMDET_HOOKS.register_module()
class LinearMomentumEMAHook(BaseEMAHook):
    """``mmdet.core.hook.ema.LinearMomentumEMAHook``: ``min(m**interval, (1+iter)/(warm_up+iter))``.

    Args:
        warm_up: warm-up length of the momentum cap. Defaults to 100.
        **kwargs: BaseEMAHook arguments.
    """

    def __init__(self, warm_up: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.warm_up = warm_up
        self.momentum_fun = lambda x: min(self.momentum**self.interval,
                                          (1 + x) / (warm_up + x))
