"""Golden checks that pin EMA behaviour, not the machine: schedule bitwise, arithmetic per class.

:func:`check_golden` compares an object (state dict, module, :class:`~.golden.Trajectory`)
with a golden file in two parts:

1. **The schedule**, bitwise on every machine: labels (which hook call / iteration each
   snapshot is), keys, dtypes and shapes, every integer tensor (counters, ``steps``,
   ``num_batches_tracked``), and for each floating-point key at each step whether its value
   *changed* since the previous snapshot (an update, a swap or a copy happened) or not; a
   change within the rounding bound of :data:`~.tolerance.UNRECORDED_CLASS` does not count
   (an update of an EMA that equals its source, e.g. a frozen layer, returns the same bits
   with fused multiply-add kernels and moves by one ULP with scalar ones).
   Gating, interval, swap point and key changes show here on any CPU or GPU.
2. **The arithmetic**, bitwise against the data recorded for the running kernel class
   (:func:`compat_ema.testing.environment.kernel_class`; a golden file holds one recording
   per class its recorder could run, see docs/golden-tests.md); for a class with no recording
   (ARM, another GPU) within the measured bound :data:`compat_ema.testing.tolerance.UNRECORDED_CLASS`.

A failure says which part failed, and names the step (label) and key; when the schedule is
identical and only the arithmetic of an unrecorded class differs beyond the bound, the message
starts with the environment note ("recorded on X, running on Y; schedule identical; ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from . import golden
from .environment import environment_note, fingerprint, kernel_class
from .tolerance import UNRECORDED_CLASS, TolSpec, combine

__all__ = ['schedule_difference', 'check_golden', 'GoldenCheck']


def _rows(obj: Union[Dict[str, torch.Tensor], golden.Trajectory]) -> List[Tuple[str, Dict[str, Any]]]:
    """``[(label, {key: schedule facts})]``: dtype, shape, ints, and 'changed' for floats."""
    if isinstance(obj, golden.Trajectory):
        pairs = list(zip(obj.labels, obj.snapshots))
    else:
        pairs = [('state', obj)]
    out, prev = [], {}
    for label, snap in pairs:
        facts = {}
        for k, t in snap.items():
            t = t.detach().cpu()
            fact: Dict[str, Any] = {'dtype': str(t.dtype), 'shape': tuple(t.shape)}
            if not t.is_floating_point() and not t.is_complex():
                fact['value'] = t.tolist()
            elif k in prev and prev[k].shape == t.shape and prev[k].dtype == t.dtype:
                fact['changed'] = golden.compare_state_dicts(
                    {k: prev[k]}, {k: t}, UNRECORDED_CLASS.ulp, UNRECORDED_CLASS.atol) != []
            facts[k] = fact
        prev = {k: v.detach().cpu() for k, v in snap.items()}
        out.append((label, facts))
    return out


def schedule_difference(expected: Any, actual: Any) -> Optional[str]:
    """The first difference of schedule (see module doc) between two goldens, or None."""
    expected, actual = golden.as_golden(expected), golden.as_golden(actual)
    a, b = _rows(expected), _rows(actual)
    for i, ((le, fe), (la, fa)) in enumerate(zip(a, b)):
        where = f'step {i} ({le!r})'
        if le != la:
            return f'{where}: label differs, got {la!r}'
        if set(fe) != set(fa):
            missing = [k for k in fe if k not in fa]
            extra = [k for k in fa if k not in fe]
            return f'{where}: keys differ (missing {missing[:5]}, unexpected {extra[:5]})'
        for k in fe:
            if fe[k] != fa[k]:
                what = ', '.join(f'{n}: expected {fe[k].get(n)!r}, got {fa[k].get(n)!r}'
                                 for n in ('dtype', 'shape', 'value', 'changed')
                                 if fe[k].get(n) != fa[k].get(n))
                return f'{where}, key {k!r}: {what}'
    if len(a) != len(b):
        return f'length differs: golden has {len(a)} snapshots, got {len(b)}'
    return None


@dataclass
class GoldenCheck:
    """What :func:`check_golden` compared: the class used (None: unrecorded), the bound, a note."""

    kernel_class: str
    recorded_class: Optional[str]
    ulp: TolSpec
    atol: TolSpec
    note: str


def check_golden(path: Union[str, Path], actual: Any, device: Any = 'cpu',
                 ulp: TolSpec = 0, atol: TolSpec = 0.0, context: str = '',
                 classes: Optional[List[str]] = None) -> GoldenCheck:
    """Compare ``actual`` with the golden file at ``path`` (schedule bitwise, arithmetic per
    kernel class, see module doc); raise :class:`~.golden.GoldenMismatch` when it differs.

    ``ulp``/``atol``: an extra allowance for a known cross-build difference (a row of
    :data:`~.tolerance.TOLERANCE_TABLE`); 0 = bitwise on a recorded class. ``classes``: the
    kernel classes of a file written before format 2 (which does not list them itself).
    """
    cls = kernel_class(device)
    expected, meta = golden.load_golden(path)
    if classes is not None and not meta.get('kernel_classes'):
        meta['kernel_classes'] = list(classes)
    from .environment import EQUIVALENT_CLASSES
    if cls in meta.get('kernel_classes', []) or EQUIVALENT_CLASSES.get(cls) in meta.get(
            'kernel_classes', []):
        expected, meta2 = golden.load_golden(path, kernel_class=cls)
        meta = dict(meta, _selected_class=meta2['_selected_class'] or (
            cls if cls in meta['kernel_classes'] else EQUIVALENT_CLASSES[cls]))
    actual = golden.as_golden(actual)
    recorded = meta.get('_selected_class')
    note = environment_note(meta.get('environment'), fingerprint(device))
    head = f'{context}: ' if context else f'{path}: '
    sched = schedule_difference(expected, actual)
    if sched is not None:
        raise golden.GoldenMismatch(f'{head}EMA schedule differs from the golden: {sched}\n'
                                    f'  ({note})')
    if recorded is None:
        ulp, atol = combine((ulp, atol), (UNRECORDED_CLASS.ulp, UNRECORDED_CLASS.atol))
    try:
        golden.assert_matches(expected, actual, ulp=ulp, atol=atol, context=context or str(path))
    except golden.GoldenMismatch as exc:
        if recorded is None:
            classes = ', '.join(meta.get('kernel_classes') or ['unknown'])
            raise golden.GoldenMismatch(
                f'{note}; schedule identical; kernel class {cls} has no recording (recorded: '
                f'{classes}) and the tensors differ beyond the bound for unrecorded classes '
                f'(ulp={UNRECORDED_CLASS.ulp}, atol per dtype):\n{exc}') from None
        raise golden.GoldenMismatch(f'{exc}\n  (schedule identical; arithmetic compared with '
                                    f'the recording for kernel class {recorded}; {note})') from None
    return GoldenCheck(cls, recorded, ulp, atol, note)
