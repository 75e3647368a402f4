"""A tiny restoration model for the GAN/restoration EMA hooks in the harness runners.

:class:`TinyRestorer` has a ``generator`` (``Linear(4, 3) -> BatchNorm1d(3) ->
ReLU -> Linear(3, 3)``, the last layer optionally frozen, as the fixed parts of
real generators) and, when ``with_ema``, a ``generator_ema`` deep copy, as
mmedit 0.x's Real-ESRGAN models build with ``is_use_ema=True``. It trains in
both runner styles (see :mod:`compat_ema.testing.models`): mmcv's
``train_step(data, optimizer)`` returns the loss for ``OptimizerHook``;
mmengine's ``train_step(data, optim_wrapper=)`` steps itself. Only the
generator is trained; the EMA module is the hooks' business.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

__all__ = ['TinyRestorer', 'generator_parameters']


class _Generator(nn.Module):
    def __init__(self, frozen_head: bool):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 3)
        if frozen_head:
            self.head.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.fc(x))))


class TinyRestorer(nn.Module):
    """``generator`` (+ ``generator_ema``) with mmcv- and mmengine-style ``train_step``.

    Args:
        seed: ``torch.manual_seed`` before building (None: leave the RNG alone).
        with_ema: build ``generator_ema`` as a deep copy (else a hook's
            ``before_run`` creates it, with upstream's warning).
        frozen_head: freeze the generator's last layer (``requires_grad=False``).
    """

    def __init__(self, seed: Optional[int] = 0, with_ema: bool = True, frozen_head: bool = True):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.generator = _Generator(frozen_head)
        if with_ema:
            self.generator_ema = copy.deepcopy(self.generator)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.generator(inputs)

    def _loss(self, data: Dict[str, torch.Tensor]) -> torch.Tensor:
        return ((self.generator(data['inputs']) - data['targets']) ** 2).mean()

    def train_step(self, data: Dict[str, torch.Tensor], optimizer: Any = None,
                   optim_wrapper: Any = None) -> Dict[str, Any]:
        """mmcv: return the loss for ``OptimizerHook``; mmengine: step ``optim_wrapper``."""
        loss = self._loss(data)
        if optim_wrapper is not None:
            optim_wrapper.update_params(loss)
            return dict(loss=loss.detach())
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))

    def val_step(self, data: Dict[str, torch.Tensor], optimizer: Any = None) -> Dict[str, Any]:
        loss = self._loss(data)
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))

    def test_step(self, data: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        return self.val_step(data)


def generator_parameters(model: TinyRestorer):
    """The parameters an optimizer should own: the generator's trainable ones."""
    return [p for p in model.generator.parameters() if p.requires_grad]
