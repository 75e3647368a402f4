"""Record an EMA run once, replay its inputs everywhere: golden tests that do not pin the machine.

The user side of ``ema_golden.replay(...)`` (:mod:`compat_ema.testing.pytest_plugin`;
docs/golden-tests.md). A test trains a few steps (the machine's numerics: GEMM kernels,
thread count, GPU) and lets its EMA follow; :class:`EMAReplay` splits the two:

* ``run.feed(model)`` before each EMA event: when recording, it stores the raw weights and
  buffers the EMA is about to see; when checking, it writes the *recorded* ones into ``model``
  (in place, ``copy_``), so the EMA sees bit-identical inputs on every machine;
* ``run.snapshot(label, ema)`` after each EMA event: the EMA state (a module, a state dict, or
  an object with ``state_dict()``), stored under ``ema.<key>`` next to the fed inputs
  (``src.<key>``) in one :class:`~compat_ema.testing.golden.Trajectory`.

At the end (``with`` block exit, or ``run.check()``) the trajectory is compared by
:func:`compat_ema.testing.portable.check_golden`: the schedule (labels, keys, counters, which
step changed which tensor) exactly, the EMA arithmetic bitwise against the recording for the
running kernel class, or within the measured bound for a class that has no recording. A
change of momentum (by one ULP), interval, gating, swap point or keys fails, naming the step
and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from . import golden, portable
from .environment import fingerprint, kernel_class

__all__ = ['EMAReplay', 'add_class_recording']


def _state(obj: Any) -> Dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, 'state_dict'):
        return dict(obj.state_dict())
    raise TypeError(f'snapshot: expected a module, a state dict or an object with state_dict(), '
                    f'got {type(obj).__name__}')


class EMAReplay:
    """One recorded EMA run (see module doc). ``mode``: 'record', 'check' or 'record-class'."""

    def __init__(self, path: Path, mode: str = 'check', device: Any = 'cpu',
                 meta: Optional[Mapping[str, Any]] = None,
                 on_recorded: Optional[Callable[[Path], None]] = None,
                 fail: Optional[Callable[[str], None]] = None):
        if mode not in ('record', 'check', 'record-class'):
            raise ValueError(f'EMAReplay: unknown mode {mode!r}')
        self.path, self.mode, self.device = Path(path), mode, device
        self.meta = dict(meta or {})
        self.trajectory = golden.Trajectory()
        self._pending: Dict[str, torch.Tensor] = {}
        self._on_recorded = on_recorded
        self._fail = fail
        self._expected: Optional[golden.Trajectory] = None
        if mode != 'record':
            if not self.path.is_file():
                raise golden.GoldenFileError(f'golden file {self.path} does not exist')
            self._expected, _ = golden.load_golden(self.path)  # inputs: the primary recording

    def feed(self, model: Any) -> None:
        """Before an EMA event: record ``model``'s raw state, or write the recorded one into it."""
        state = _state(model)
        if self.mode != 'record':
            i = len(self.trajectory)
            snaps = self._expected.snapshots
            recorded = {k[4:]: v for k, v in snaps[i].items() if k.startswith('src.')} \
                if i < len(snaps) else {}
            if set(recorded) != set(state):
                self._raise(golden.GoldenMismatch(
                    f'{self.path}: feed before step {i}: the golden has inputs for '
                    f'{sorted(recorded)[:5] or "no feed here"}, the model has {sorted(state)[:5]}'))
            with torch.no_grad():
                for k, t in state.items():
                    t.copy_(recorded[k].to(t.device))
        self._pending = {f'src.{k}': v.detach().clone().cpu() for k, v in state.items()}

    def snapshot(self, label: str, ema: Any) -> None:
        """After an EMA event: store the EMA's state (and the inputs fed since the last one)."""
        snap = {f'ema.{k}': v for k, v in _state(ema).items()}
        snap.update(self._pending)
        self._pending = {}
        self.trajectory.record(str(label), snap)

    def check(self) -> Optional[portable.GoldenCheck]:
        """Record, add this kernel class's recording, or compare (see module doc)."""
        if self.mode == 'record':
            meta = dict(self.meta, environment=fingerprint(self.device),
                        kernel_classes=[kernel_class(self.device)], kind='ema_replay')
            golden.save_golden(self.path, self.trajectory, meta=meta)
            if self._on_recorded:
                self._on_recorded(self.path)
            return None
        if self.mode == 'record-class':
            add_class_recording(self.path, self.trajectory, kernel_class(self.device))
            return None
        try:
            return portable.check_golden(self.path, self.trajectory, self.device)
        except (golden.GoldenMismatch, golden.GoldenFileError) as exc:
            self._raise(exc)
        return None

    def _raise(self, exc: Exception) -> None:
        if self._fail is None:
            raise exc
        self._fail(str(exc))  # pytest.fail from the plugin: a short report, no traceback

    def __enter__(self) -> 'EMAReplay':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.check()


def add_class_recording(path: Path, obj: Any, cls: str) -> bool:
    """Add ``obj`` as the recording of kernel class ``cls`` to the golden file at ``path`` (same
    schedule required). False when ``cls`` (or an equivalent class) is already recorded."""
    expected, meta = golden.load_golden(path, kernel_class=cls)
    if meta.get('_selected_class') is not None:
        return False
    sched = portable.schedule_difference(expected, obj)
    if sched is not None:
        raise golden.GoldenMismatch(f'{path}: under kernel class {cls} the EMA schedule differs '
                                    f'from the recording: {sched}')
    primary, _ = golden.load_golden(path)
    variants = {}
    for other in meta.get('kernel_classes', [])[1:]:
        obj_other, _ = golden.load_golden(path, kernel_class=other)
        variants[other] = obj_other
    variants[cls] = golden.as_golden(obj)
    meta = {k: v for k, v in meta.items() if not k.startswith('_')}
    meta['kernel_classes'] = list(meta.get('kernel_classes', [])) + [cls]
    golden.save_golden(path, primary, meta=meta, variants=variants)
    return True
