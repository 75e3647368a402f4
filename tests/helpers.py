"""Small test helpers: a fake runner, tiny models, a float64 reference EMA, the kernel-path switch
and what the golden replays share (the compat_ema hook of a case, the ULP policy lookup)."""
from __future__ import annotations

import contextlib
import fnmatch
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from compat_ema.core import kernels
from compat_ema.core.runner import SimpleRunner
from compat_ema.core.torch_features import LOAD_WEIGHTS_ONLY, lerp_implemented


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


def torch_load(f, weights_only: bool = False, **kwargs):
    """``torch.load(f, weights_only=...)`` on every torch >= 1.8 (the keyword exists from
    torch 1.13): ``weights_only=True`` reads with torch's weights-only unpickler, or on
    older torch with compat_ema's restricted one holding torch's allowlist only
    (``compat_ema.checkpoint.safe_load.load_weights_only``); ``False`` is a full unpickle."""
    if weights_only:
        from compat_ema.checkpoint.safe_load import load_weights_only
        return load_weights_only(f, **kwargs)
    if LOAD_WEIGHTS_ONLY:
        kwargs['weights_only'] = False
    return torch.load(f, **kwargs)


def _bn_counts_in_place() -> bool:
    """Whether ``BatchNorm`` counts batches in place (``num_batches_tracked.add_(1)``: torch
    1.12.1 and later) or rebinds the buffer to a new tensor (``self.num_batches_tracked =
    self.num_batches_tracked + 1``: torch 1.8.1 and 1.10.2). Rebinding leaves behind the tensor
    that mmdet's ``BaseEMAHook`` took from ``model.state_dict()`` in ``before_run``: its
    swaps then exchange the stale counter (0) with the EMA entry and never touch the live
    one, so on those torch versions the real mmdet 2.28.2 leaves (live, EMA) counters at
    (n, 0) where newer torch gives (0, n) (recorded from the real upstream on torch 1.8.1:
    reference/torch18/traces). compat_ema reproduces both, because it follows the same
    tensors."""
    bn = torch.nn.BatchNorm1d(1)
    before = bn.num_batches_tracked
    bn(torch.zeros(2, 1))
    return bn.num_batches_tracked is before


BN_COUNTS_IN_PLACE = _bn_counts_in_place()


def resume_comparable(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """What an uninterrupted and a resumed legacy run can be compared on: everything on
    newer torch; without the BatchNorm counters on torch 1.8-1.10, where the mmdet
    hooks track a counter that BatchNorm has since replaced (:data:`BN_COUNTS_IN_PLACE`),
    so the EMA-side counter of a resumed run (which tracks the live counter again from
    its ``before_run``) differs from the uninterrupted one. Floating entries are unaffected."""
    if BN_COUNTS_IN_PLACE:
        return sd
    return type(sd)((k, v) for k, v in sd.items() if 'num_batches_tracked' not in k)


TORCH18 = Path(__file__).resolve().parents[1] / 'reference' / 'torch18'


def replay_or_upstream_error(case: dict, run: Callable[[], Any]) -> Optional[Any]:
    """``run()`` (a replay of a ``reference/cases.py`` case); where this torch's CPU
    ``lerp_`` lacks the case's dtype (bfloat16 in torch 1.8-1.12), the real mmengine
    ``ExponentialMovingAverage`` raises on its first update instead of recording a
    trajectory (``reference/torch18/<case>.error.json``, recorded on torch 1.8.1), so
    compat_ema must raise the same ``RuntimeError``: returns None then. Any other error,
    or this one on a torch whose lerp_ has the dtype, fails the test."""
    if lerp_implemented(getattr(torch, case['dtype'])):
        return run()
    try:
        return run()
    except RuntimeError as exc:
        got = f'RuntimeError: {exc}'
        if 'lerp' not in got or 'not implemented' not in got:
            raise
        recorded = TORCH18 / f"{case['name']}.error.json"
        assert recorded.is_file(), f"{case['name']}: {got}, but the real upstream ran this case"
        assert json.loads(recorded.read_text())['error'] == got
        return None


def make_compat_hook(case: dict):
    """compat_ema's twin of the upstream hook named by a ``reference/cases.py`` case."""
    kwargs = dict(case['hook_kwargs'])
    if case['generation'] == 'mmcv':
        from compat_ema.mmcv.runner import hooks
    elif case['generation'] == 'mmdet':
        from compat_ema.mmdet.core.hook import ema as hooks
    else:
        from compat_ema.mmengine import hooks
    return getattr(hooks, case['hook'])(**kwargs)


def ulp_policy(table: Sequence[Tuple[str, dict]], version: str) -> dict:
    """The ULP bounds per dtype of the first ``(torch version pattern, bounds)`` row of
    ``table`` whose fnmatch pattern matches ``version``."""
    for pattern, ulp in table:
        if fnmatch.fnmatchcase(version, pattern):
            return ulp
    raise LookupError(version)  # pragma: no cover - the tables end with a '*' row


@contextlib.contextmanager
def fast_path(enabled: bool) -> Iterator[bool]:
    """Run the block with compat_ema's fast kernels on (``True``) or the faithful loops
    (``False``); the previous setting is restored afterwards, also on error."""
    before = kernels.fast_path_enabled()
    kernels.set_fast_path(enabled)
    try:
        yield enabled
    finally:
        kernels.set_fast_path(before)
