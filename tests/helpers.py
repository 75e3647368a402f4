"""Small test helpers: a fake runner, tiny models and a float64 reference EMA."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from compat_ema.core.runner import SimpleRunner


class FakeRunner(SimpleRunner):
    """The runner protocol with settable counters; records ``resume(path)`` calls."""

    def __init__(self, model: nn.Module, max_iters: int = 1000, max_epochs: int = 100,
                 resume: bool = False):
        self.resumed: List[str] = []
        super().__init__(model, max_iters=max_iters, max_epochs=max_epochs, resume=resume,
                         resume_fn=self.resumed.append)


class TinyModel(nn.Module):
    """Linear(4, 3) + BatchNorm1d(3), as in the runs of docs/runner-behaviour.md."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))


def set_params(model: nn.Module, t: int) -> None:
    """Deterministic parameter values for iteration ``t`` (no optimizer needed)."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            g = torch.Generator().manual_seed(1000 * t + i)
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def ema64(values: List[torch.Tensor], momenta: List[Optional[float]], init: torch.Tensor
          ) -> torch.Tensor:
    """Independent float64 EMA: ``e = (1 - m) * e + m * v`` for each non-None m."""
    e = init.double().clone()
    for v, m in zip(values, momenta):
        if m is not None:
            e = (1 - m) * e + m * v.double()
    return e


def _weights_only_reads_floats() -> bool:
    """torch 1.13's weights-only unpickler has no BINFLOAT opcode ("Unsupported operand 71"):
    any checkpoint holding a Python float (optimizer lr, meta) fails there. Trusted test
    files are then read with a full unpickle; everything else is unchanged."""
    import io
    buf = io.BytesIO()
    torch.save({'lr': 0.5}, buf)
    buf.seek(0)
    try:
        torch.load(buf, weights_only=True)
    except Exception:
        return False
    return True


WEIGHTS_ONLY_READS_FLOATS = _weights_only_reads_floats()
