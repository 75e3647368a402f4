"""Golden files for EMA state: record, load safely, compare with a readable diff.

The library side of the ``ema_golden`` pytest fixture
(:mod:`compat_ema.testing.pytest_plugin`) and of the project's own golden tests
(``tests/test_golden_trajectories.py`` against ``reference/trajectories``).

Two kinds of golden objects:

* a **state dict**: ``{key: Tensor}`` (an ``nn.Module`` is taken as its ``state_dict()``);
* a **trajectory**: a :class:`Trajectory`, i.e. labelled snapshots of state dicts (one per hook
  call, per iteration, ...). A list of dicts or of ``(label, dict)`` pairs is accepted too.

File format ``compat_ema.golden`` version 1: ``torch.save`` of a plain dict
(``format``, ``version``, ``kind``, ``keys``, ``data``, ``meta_json``; for
trajectories also ``labels`` and ``index``: each key is stacked over the
snapshots where it is present, one tensor per key). Files are written
atomically (temporary file + rename) and read with
``torch.load(weights_only=True)``: no pickled code is ever executed.

Comparison: integer and bool tensors must be equal; a floating-point element
passes when its bits are equal, or its distance is within ``ulp`` units in the
last place (of its own dtype), or its absolute error is within ``atol``.
``ulp=0, atol=0`` (the default) means bitwise. :data:`TOLERANCE_TABLE` holds
the project's policy per torch build and device (MIGRATION.md, "Tolerance
policy").
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..checkpoint.safe_load import load_weights_only
from ..core.atomic import write_atomic

__all__ = ['FORMAT', 'VERSION', 'GoldenFileError', 'GoldenMismatch', 'Trajectory', 'KeyDiff',
           'Tolerance', 'TOLERANCE_TABLE', 'tolerance_for', 'ulp_distance', 'as_golden',
           'save_golden', 'load_golden', 'compare_state_dicts', 'compare_trajectories',
           'assert_matches', 'assert_matches_golden', 'format_mismatch', 'TrajectoryDiff',
           'same_bits']

FORMAT = 'compat_ema.golden'
VERSION = 2  # 2 adds ``variants`` (per kernel class); files without them are written as 1
Number = Union[int, float]
TolSpec = Union[Number, Mapping[Any, Number]]


class GoldenFileError(Exception):
    """A golden file is missing, unreadable, or not in the compat_ema golden format."""


class GoldenMismatch(AssertionError):
    """The compared object differs from the golden one beyond the tolerance."""


# --------------------------------------------------------------------------- objects
class Trajectory:
    """Labelled snapshots of state dicts, e.g. one after every hook call.

    ``record`` clones (and moves to CPU) what it is given, so later in-place
    updates of the model do not change recorded snapshots.
    """

    def __init__(self, labels: Optional[Sequence[str]] = None,
                 snapshots: Optional[Sequence[Mapping[str, Tensor]]] = None):
        self.labels: List[str] = list(labels or [])
        self.snapshots: List[Dict[str, Tensor]] = [dict(s) for s in (snapshots or [])]
        if len(self.labels) != len(self.snapshots):
            raise ValueError(f'Trajectory: {len(self.labels)} labels for '
                             f'{len(self.snapshots)} snapshots')

    def record(self, label: str, state: Union[Mapping[str, Tensor], torch.nn.Module]) -> None:
        """Append a cloned CPU copy of ``state`` (a state dict or a module) under ``label``."""
        state = _as_state_dict(state, what=f'snapshot {label!r}')
        self.labels.append(str(label))
        self.snapshots.append({k: v.detach().clone().cpu() for k, v in state.items()})

    def __len__(self) -> int:
        return len(self.snapshots)

    def __repr__(self) -> str:
        return f'Trajectory({len(self)} snapshots)'


def _as_state_dict(obj: Any, what: str = 'object') -> Dict[str, Tensor]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f'{what}: expected a state dict (mapping of str to Tensor) or an '
                        f'nn.Module, got {type(obj).__name__}')
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise TypeError(f'{what}: entry {k!r} is {type(v).__name__}; a golden state dict '
                            'maps str keys to Tensors')
    return dict(obj)


def as_golden(obj: Any) -> Union[Dict[str, Tensor], Trajectory]:
    """Normalise ``obj`` to a state dict or a :class:`Trajectory` (see module doc)."""
    if isinstance(obj, Trajectory):
        return obj
    if isinstance(obj, (torch.nn.Module, Mapping)):
        return _as_state_dict(obj)
    if isinstance(obj, (list, tuple)):
        traj = Trajectory()
        for i, item in enumerate(obj):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                traj.record(item[0], item[1])
            else:
                traj.record(str(i), item)
        return traj
    raise TypeError(f'cannot compare {type(obj).__name__} against a golden file: pass a state '
                    'dict, an nn.Module, a Trajectory, or a list of state dicts')


# --------------------------------------------------------------------------- file format
def _pack(obj: Union[Dict[str, Tensor], Trajectory], meta: Mapping[str, Any]) -> Dict[str, Any]:
    meta_json = json.dumps(dict(meta), sort_keys=True)
    if isinstance(obj, Trajectory):
        keys: List[str] = []
        for snap in obj.snapshots:
            keys.extend(k for k in snap if k not in keys)
        index, data = {}, {}
        for k in keys:
            steps = [i for i, s in enumerate(obj.snapshots) if k in s]
            ts = [obj.snapshots[i][k].detach().cpu().contiguous() for i in steps]
            for i, t in zip(steps, ts):
                if t.dtype != ts[0].dtype or t.shape != ts[0].shape:
                    raise ValueError(f'key {k!r} changes dtype or shape at snapshot {i} '
                                     f'({obj.labels[i]!r}); golden trajectories need one '
                                     'dtype and shape per key')
            index[k] = steps
            data[k] = torch.stack(ts).clone()
        return {'format': FORMAT, 'version': 1, 'kind': 'trajectory',
                'labels': list(obj.labels), 'keys': keys, 'index': index, 'data': data,
                'meta_json': meta_json}
    return {'format': FORMAT, 'version': 1, 'kind': 'state_dict', 'keys': list(obj),
            'data': {k: v.detach().cpu().contiguous().clone() for k, v in obj.items()},
            'meta_json': meta_json}


def _with_variants(packed: Dict[str, Any], variants: Optional[Mapping[str, Any]]
                   ) -> Dict[str, Any]:
    """Add per-kernel-class data: ``{class: golden of that class}``; only the keys whose
    (stacked) tensors differ from the primary data are stored (format version 2)."""
    if not variants:
        return packed
    out: Dict[str, Dict[str, Tensor]] = {}
    for cls, obj in variants.items():
        other = _pack(as_golden(obj), {})
        if set(other['keys']) != set(packed['keys']) or other.get('labels') != packed.get(
                'labels') or other.get('index') != packed.get('index'):
            raise ValueError(f'kernel class {cls!r}: keys, labels or steps differ from the '
                             'primary recording; only the arithmetic may differ between classes')
        out[str(cls)] = {k: v for k, v in other['data'].items()
                         if not same_bits(v, packed['data'][k])}
    return dict(packed, version=VERSION, variants=out)


def _unpack(raw: Any, path: Path, kernel_class: Optional[str] = None
            ) -> Tuple[Union[Dict[str, Tensor], Trajectory], Dict[str, Any]]:
    def bad(why: str) -> GoldenFileError:
        return GoldenFileError(f'{path}: not a valid {FORMAT} file ({why}); re-record it '
                               '(pytest --golden-record) or restore it from version control')

    if not isinstance(raw, dict) or raw.get('format') != FORMAT:
        raise bad('missing format marker')
    if not isinstance(raw.get('version'), int) or raw['version'] > VERSION:
        raise bad(f"format version {raw.get('version')!r}; this compat_ema reads <= {VERSION}")
    kind, keys, data = raw.get('kind'), raw.get('keys'), raw.get('data')
    if not isinstance(keys, list) or not isinstance(data, dict) or set(keys) != set(data):
        raise bad('keys and data do not match')
    if not all(isinstance(v, Tensor) for v in data.values()):
        raise bad('a data entry is not a tensor')
    try:
        meta = json.loads(raw.get('meta_json', '{}'))
    except ValueError as exc:
        raise bad(f'meta is not JSON: {exc}') from None
    variants = raw.get('variants') or {}
    if not isinstance(variants, dict) or any(
            not isinstance(v, dict) or not set(v) <= set(data)
            or any(not isinstance(t, Tensor) or t.shape != data[k].shape for k, t in v.items())
            for v in variants.values()):
        raise bad('variants do not match the data')
    meta['_selected_class'] = None
    if kernel_class is not None:
        from .environment import EQUIVALENT_CLASSES
        classes = list(meta.get('kernel_classes') or [])
        for cls in (kernel_class, EQUIVALENT_CLASSES.get(kernel_class)):
            if cls is not None and cls in classes:
                data = dict(data, **variants.get(cls, {}))
                meta['_selected_class'] = cls
                break
    if kind == 'state_dict':
        return {k: data[k] for k in keys}, meta
    if kind != 'trajectory':
        raise bad(f'unknown kind {kind!r}')
    labels, index = raw.get('labels'), raw.get('index')
    if not isinstance(labels, list) or not isinstance(index, dict) or set(index) != set(keys):
        raise bad('labels/index missing')
    snaps: List[Dict[str, Tensor]] = [{} for _ in labels]
    for k in keys:
        steps = index[k]
        if len(steps) != data[k].shape[0] or any(not 0 <= i < len(labels) for i in steps):
            raise bad(f'index of key {k!r} does not match its data')
        for row, i in enumerate(steps):
            snaps[i][k] = data[k][row]
    return Trajectory(labels, snaps), meta


def _write_atomic(payload: bytes, path: Path) -> None:
    write_atomic(path, lambda f: f.write(payload))


def save_golden(path: Union[str, Path], obj: Any, meta: Optional[Mapping[str, Any]] = None,
                variants: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``obj`` (state dict, module or trajectory) to ``path`` atomically.

    ``meta`` must be JSON-serialisable; the torch version is added under
    ``recorded_with``. The bytes depend only on the content (no timestamps).
    ``variants``: ``{kernel class: object}`` recorded on other kernel classes (same keys
    and steps); list the classes, primary first, in ``meta['kernel_classes']``.
    """
    path = Path(path)
    meta = dict(meta or {})
    meta.setdefault('recorded_with', {'torch': torch.__version__})
    buf = io.BytesIO()
    torch.save(_with_variants(_pack(as_golden(obj), meta), variants), buf)
    _write_atomic(buf.getvalue(), path)
    return path


def load_golden(path: Union[str, Path], kernel_class: Optional[str] = None
                ) -> Tuple[Union[Dict[str, Tensor], Trajectory], Dict[str, Any]]:
    """Read a golden file with ``torch.load(weights_only=True)``; return ``(object, meta)``.

    With ``kernel_class`` (:func:`compat_ema.testing.environment.kernel_class`), the data
    recorded for that class (or an equivalent one) when the file has it; ``meta['_selected_class']``
    says which class the data is for (None: the primary recording, not for this class).
    Raises :class:`GoldenFileError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise GoldenFileError(f'golden file {path} does not exist')
    try:
        raw = load_weights_only(path, map_location='cpu')  # no pickled code runs, any torch
    except Exception as exc:  # UnpicklingError, zip errors, EOFError, RuntimeError...
        raise GoldenFileError(
            f'{path}: cannot be read safely as a {FORMAT} file '
            f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}); '
            're-record it (pytest --golden-record) or restore it from version control') from None
    return _unpack(raw, path, kernel_class)


# --------------------------------------------------------------------------- comparison
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}


def _ordered(t: Tensor) -> Tensor:
    """Map float bits to int64 so that adjacent floats differ by 1 (+0 and -0 both map to 0)."""
    bits = t.contiguous().view(_INT_VIEW[t.dtype]).to(torch.int64)
    mag = bits & ((1 << (torch.finfo(t.dtype).bits - 1)) - 1)
    return torch.where(bits < 0, -mag, mag)


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and bits (NaN payloads and the sign of zero included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype in _INT_VIEW:
        return torch.equal(a.contiguous().view(_INT_VIEW[a.dtype]),
                           b.contiguous().view(_INT_VIEW[b.dtype]))
    return torch.equal(a, b)


def ulp_distance(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise distance in units in the last place of ``a.dtype`` (float64 tensor).

    ``a`` and ``b`` must have the same floating dtype. NaN against anything but
    the same NaN bits gives ``inf``.
    """
    if a.dtype != b.dtype or a.dtype not in _INT_VIEW:
        raise TypeError(f'ulp_distance needs two tensors of one float dtype, got {a.dtype}, {b.dtype}')
    oa, ob = _ordered(a), _ordered(b)
    same_sign = (oa >= 0) == (ob >= 0)
    d = torch.where(same_sign, (oa - ob).abs().to(torch.float64),
                    oa.abs().to(torch.float64) + ob.abs().to(torch.float64))
    nan = torch.isnan(a) | torch.isnan(b)
    return torch.where(nan, torch.full_like(d, math.inf), d)


def _tol(spec: TolSpec, dtype: torch.dtype) -> float:
    if isinstance(spec, Mapping):
        for key in (dtype, str(dtype).replace('torch.', ''), 'default'):
            if key in spec:
                return float(spec[key])
        return 0.0
    return float(spec)


@dataclass
class KeyDiff:
    """How one key differs: ``problem`` is 'missing', 'unexpected', 'dtype', 'shape' or 'values'."""

    key: str
    problem: str
    detail: str = ''
    n_bad: int = 0
    numel: int = 0
    max_abs: float = 0.0
    max_ulp: float = 0.0
    first_index: Tuple[int, ...] = ()
    expected_at_first: Any = None
    actual_at_first: Any = None

    def describe(self) -> str:
        """One readable line."""
        if self.problem != 'values':
            return f'{self.key!r}: {self.problem} ({self.detail})'
        ulp = '' if math.isnan(self.max_ulp) else f', max ULP error {self.max_ulp:.0f}'
        return (f'{self.key!r}: {self.n_bad}/{self.numel} elements differ, max abs error '
                f'{self.max_abs:.3g}{ulp}, first at index {list(self.first_index)}: '
                f'expected {self.expected_at_first!r}, got {self.actual_at_first!r}')


def _compare_tensor(key: str, exp: Tensor, act: Tensor, ulp: TolSpec, atol: TolSpec
                    ) -> Optional[KeyDiff]:
    act = act.detach().cpu()
    exp = exp.detach().cpu()
    if exp.dtype != act.dtype:
        return KeyDiff(key, 'dtype', f'expected {exp.dtype}, got {act.dtype}')
    if exp.shape != act.shape:
        return KeyDiff(key, 'shape', f'expected {tuple(exp.shape)}, got {tuple(act.shape)}')
    if exp.dtype in _INT_VIEW:
        same_bits = exp.contiguous().view(_INT_VIEW[exp.dtype]) == act.contiguous().view(
            _INT_VIEW[exp.dtype])
        if bool(same_bits.all()):
            return None
        u = ulp_distance(exp, act)
        abs_err = (exp.to(torch.float64) - act.to(torch.float64)).abs()
        ok = same_bits.clone()
        ulp_b, atol_b = _tol(ulp, exp.dtype), _tol(atol, exp.dtype)
        if ulp_b > 0:
            ok |= u <= ulp_b
        if atol_b > 0:
            ok |= abs_err <= atol_b
        bad = ~ok
    elif exp.is_complex():
        bad = exp != act
        u = torch.full(exp.shape, math.nan, dtype=torch.float64)
        abs_err = (exp - act).abs().to(torch.float64)
    else:
        if torch.equal(exp, act):
            return None
        bad = exp != act
        u = torch.full(exp.shape, math.nan, dtype=torch.float64)
        abs_err = (exp.to(torch.float64) - act.to(torch.float64)).abs() if exp.dtype != torch.bool \
            else bad.to(torch.float64)
    if not bool(bad.any()):
        return None
    first = tuple(int(i) for i in bad.nonzero()[0]) if exp.dim() else ()
    return KeyDiff(key, 'values', n_bad=int(bad.sum()), numel=exp.numel(),
                   max_abs=float(abs_err[bad].max()),
                   max_ulp=float(u[bad].max()) if exp.dtype in _INT_VIEW else math.nan,
                   first_index=first, expected_at_first=exp[first].item(),
                   actual_at_first=act[first].item())


def compare_state_dicts(expected: Mapping[str, Tensor], actual: Mapping[str, Tensor],
                        ulp: TolSpec = 0, atol: TolSpec = 0.0) -> List[KeyDiff]:
    """Every key that differs (missing, unexpected, dtype, shape, or values beyond tolerance).

    ``ulp`` and ``atol`` are numbers or mappings from dtype (or its name, or
    ``'default'``) to numbers. Integer and bool tensors are always compared exactly.
    """
    expected = _as_state_dict(expected, 'expected')
    actual = _as_state_dict(actual, 'actual')
    diffs = [KeyDiff(k, 'missing', 'in the golden file, not in the compared object')
             for k in expected if k not in actual]
    diffs += [KeyDiff(k, 'unexpected', 'in the compared object, not in the golden file')
              for k in actual if k not in expected]
    for k in expected:
        if k in actual:
            d = _compare_tensor(k, expected[k], actual[k], ulp, atol)
            if d is not None:
                diffs.append(d)
    return diffs


@dataclass
class TrajectoryDiff:
    """Result of :func:`compare_trajectories`: per-step key diffs, in step order."""

    length: Optional[Tuple[int, int]] = None
    steps: List[Tuple[int, str, str, List[KeyDiff]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.length is not None or bool(self.steps)


def compare_trajectories(expected: Trajectory, actual: Trajectory, ulp: TolSpec = 0,
                         atol: TolSpec = 0.0) -> TrajectoryDiff:
    """Compare snapshot by snapshot; a label mismatch is reported as a diff of that step."""
    out = TrajectoryDiff()
    if len(expected) != len(actual):
        out.length = (len(expected), len(actual))
    for i, (le, se, la, sa) in enumerate(zip(expected.labels, expected.snapshots,
                                             actual.labels, actual.snapshots)):
        diffs = compare_state_dicts(se, sa, ulp, atol)
        if le != la:
            diffs.insert(0, KeyDiff('<label>', 'label', f'expected {le!r}, got {la!r}'))
        if diffs:
            out.steps.append((i, le, la, diffs))
    return out


def _format_keys(diffs: Sequence[KeyDiff], limit: int = 12) -> List[str]:
    lines = ['    ' + d.describe() for d in diffs[:limit]]
    if len(diffs) > limit:
        lines.append(f'    ... and {len(diffs) - limit} more keys')
    return lines


def _tol_text(ulp: TolSpec, atol: TolSpec) -> str:
    if not ulp and not atol:
        return 'bitwise'
    return f'ulp={ulp}, atol={atol}'


def format_mismatch(diff: Union[List[KeyDiff], TrajectoryDiff], ulp: TolSpec = 0,
                    atol: TolSpec = 0.0, context: str = '') -> str:
    """The readable failure message for a state-dict or trajectory diff."""
    head = f'{context}: ' if context else ''
    tol = _tol_text(ulp, atol)
    if isinstance(diff, TrajectoryDiff):
        lines = []
        if diff.length is not None:
            lines.append(f'{head}trajectory length differs: golden has {diff.length[0]} '
                         f'snapshots, got {diff.length[1]}')
        if diff.steps:
            i, le, la, keys = diff.steps[0]
            names = sorted({d.key for _, _, _, ds in diff.steps for d in ds})
            lines.append(f'{head}{len(diff.steps)} snapshot(s) differ from the golden '
                         f'trajectory ({tol}); first at step {i} ({le!r}), key '
                         f'{keys[0].key!r}:')
            lines += _format_keys(keys)
            if len(diff.steps) > 1:
                j, lj, _, _ = diff.steps[-1]
                lines.append(f'  last differing step: {j} ({lj!r}); keys that differ at some '
                             f"step: {', '.join(repr(n) for n in names[:12])}"
                             + (' ...' if len(names) > 12 else ''))
        return '\n'.join(lines)
    lines = [f'{head}{len(diff)} key(s) differ from the golden state dict ({tol}):']
    return '\n'.join(lines + _format_keys(diff))


def assert_matches(expected: Any, actual: Any, ulp: TolSpec = 0, atol: TolSpec = 0.0,
                   context: str = '') -> None:
    """Raise :class:`GoldenMismatch` with a readable diff unless ``actual`` matches ``expected``."""
    expected, actual = as_golden(expected), as_golden(actual)
    if isinstance(expected, Trajectory) != isinstance(actual, Trajectory):
        kinds = ['trajectory' if isinstance(x, Trajectory) else 'state dict'
                 for x in (expected, actual)]
        raise GoldenMismatch(f'{context + ": " if context else ""}golden is a {kinds[0]}, '
                             f'compared object is a {kinds[1]}')
    if isinstance(expected, Trajectory):
        diff: Union[List[KeyDiff], TrajectoryDiff] = compare_trajectories(expected, actual,
                                                                           ulp, atol)
    else:
        diff = compare_state_dicts(expected, actual, ulp, atol)
    if diff:
        raise GoldenMismatch(format_mismatch(diff, ulp, atol, context))


def assert_matches_golden(obj: Any, path: Union[str, Path], ulp: TolSpec = 0,
                          atol: TolSpec = 0.0) -> Dict[str, Any]:
    """Compare ``obj`` with the golden file at ``path``; return the file's meta."""
    expected, meta = load_golden(path)
    assert_matches(expected, obj, ulp, atol, context=str(path))
    return meta


# the tolerance policy lives in .tolerance; re-exported here (its historical home)
from .tolerance import TOLERANCE_TABLE, Tolerance, tolerance_for  # noqa: E402,F401
