"""The tiny model and data used by the harness, the recorded traces and the examples.

:class:`TinyModel` is ``Linear(4, 3)`` followed by ``BatchNorm1d(3)``, the
model docs/runner-behaviour.md's experiments use. One class serves both runner styles:

* mmcv style: ``train_step(data, optimizer)`` returns ``dict(loss, log_vars,
  num_samples)`` and the runner's ``OptimizerHook`` does backward and step;
* mmengine style: ``train_step(data, optim_wrapper=...)`` steps the optimizer
  itself (``optim_wrapper.update_params(loss)``), as ``mmengine.model.BaseModel``
  does, and returns the log variables.

The arithmetic is the one ``reference/gen_traces.py`` runs under the real
runners (loss ``((bn(fc(x)) - y) ** 2).mean()``), so harness runs and recorded
runs agree bit for bit.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader


class TinyModel(nn.Module):
    """``Linear(4, 3) -> BatchNorm1d(3)`` with mmcv- and mmengine-style steps.

    Args:
        seed: ``torch.manual_seed`` applied before building the layers, so the
            initial weights are reproducible. None leaves the global RNG alone.
    """

    def __init__(self, seed: Optional[int] = 0):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None,
                mode: str = 'loss') -> Any:
        out = self.bn(self.fc(inputs))
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return [out]

    def _parse_losses(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        # mmengine BaseModel.parse_losses: sum of the means of every '*loss*' entry
        return sum(v.mean() for k, v in losses.items() if 'loss' in k)  # type: ignore[return-value]

    def train_step(self, data: Dict[str, torch.Tensor], optimizer: Any = None,
                   optim_wrapper: Any = None) -> Dict[str, Any]:
        """mmcv: return the loss for ``OptimizerHook``; mmengine: step ``optim_wrapper``."""
        losses = self(data['inputs'], data['targets'], mode='loss')
        if optim_wrapper is not None:
            loss = self._parse_losses(losses)
            optim_wrapper.update_params(loss)
            return dict(loss=loss.detach())
        loss = losses['loss']
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))

    def val_step(self, data: Dict[str, torch.Tensor], optimizer: Any = None) -> Dict[str, Any]:
        """Evaluate one batch (no parameter changes; BN in the mode the runner set)."""
        loss = self(data['inputs'], data['targets'], mode='loss')['loss']
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))

    def test_step(self, data: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Same as :meth:`val_step` (mmengine's test loop calls this)."""
        return self.val_step(data)


class ListLoader(list):
    """A list of batches usable by mmcv's ``IterLoader`` (it reads ``loader.sampler``)."""

    sampler = None


def make_samples(n: int, seed: int = 1) -> List[Dict[str, torch.Tensor]]:
    """``n`` samples ``dict(inputs=randn(4), targets=randn(3))`` from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 3, generator=g)
    return [dict(inputs=x[i], targets=y[i]) for i in range(n)]


def make_loader(n: int = 6, batch_size: int = 2, seed: int = 1) -> DataLoader:
    """A sequential ``DataLoader`` over :func:`make_samples` (default collate)."""
    return DataLoader(make_samples(n, seed), batch_size=batch_size, shuffle=False)  # type: ignore[arg-type]
