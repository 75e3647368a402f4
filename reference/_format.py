"""Writer of compat_ema golden files, standalone (torch only) for the generators.

The generators run in the oracle env and must not import compat_ema, so this is
a second, minimal writer of the format that ``compat_ema.testing.golden`` reads
and documents (format ``compat_ema.golden`` version 1: a ``torch.save`` of a
plain dict, loadable with ``torch.load(weights_only=True)``). The golden tests
read every file written here, so a drift between the two fails them.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

FORMAT = 'compat_ema.golden'
VERSION = 1


def pack_trajectory(labels: Sequence[str], snapshots: Sequence[Mapping[str, torch.Tensor]],
                    meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Stack each key over the snapshots where it is present: one tensor per key."""
    keys: List[str] = []
    for snap in snapshots:
        keys.extend(k for k in snap if k not in keys)
    index, data = {}, {}
    for k in keys:
        steps = [i for i, snap in enumerate(snapshots) if k in snap]
        tensors = [snapshots[i][k].detach().cpu().contiguous() for i in steps]
        first = tensors[0]
        for i, t in zip(steps, tensors):
            if t.dtype != first.dtype or t.shape != first.shape:
                raise ValueError(f'key {k!r} changes dtype/shape at snapshot {i} ({labels[i]})')
        index[k] = steps
        data[k] = torch.stack(tensors).clone()
    return {'format': FORMAT, 'version': VERSION, 'kind': 'trajectory', 'labels': list(labels),
            'keys': keys, 'index': index, 'data': data,
            'meta_json': json.dumps(dict(meta), sort_keys=True)}


def write_atomic(obj: Dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=str(path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_trajectories(out_dir: Path, cases: Iterable[Dict[str, Any]],
                       record: Callable[[Dict[str, Any]],
                                        Tuple[Sequence[str], Sequence[Mapping[str, torch.Tensor]]]],
                       recorded_with: Callable[[], Dict[str, Any]],
                       environment: Optional[Dict[str, Any]] = None) -> List[Path]:
    """Record each case at one thread (the count is restored after) and write it.

    ``record(case) -> (labels, snapshots)``; the file is ``<out_dir>/<case name>.pt``, with
    the case, ``recorded_with()`` (called after the case was recorded) and, when given,
    ``environment`` in its meta. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    written = []
    try:
        for case in cases:
            labels, snaps = record(case)
            meta = {'case': json.loads(json.dumps(case)), 'recorded_with': recorded_with()}
            if environment is not None:
                meta['environment'] = environment
            written.append(write_atomic(pack_trajectory(labels, snaps, meta),
                                        out_dir / f"{case['name']}.pt"))
    finally:
        torch.set_num_threads(saved)
    return written


# --------------------------------------------------------------------------- environment
_CHILD = 'COMPAT_EMA_GEN_CLASS_CHILD'


def environment_module():
    """compat_ema/testing/environment.py loaded by path (torch + stdlib only; no compat_ema
    package import, so generate.py's firewall still holds for every reference value)."""
    import importlib.util
    import sys
    name = 'reference_environment'
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / 'compat_ema' / 'testing' / 'environment.py'
        spec = importlib.util.spec_from_file_location(name, str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def fingerprint() -> Dict[str, Any]:
    """The environment fingerprint of this process (see compat_ema.testing.environment)."""
    return environment_module().fingerprint('cpu')


def is_class_child() -> bool:
    """True in the child process that records one kernel class."""
    return bool(os.environ.get(_CHILD))


def record_per_class(script: Path, out_dir: Path) -> List[Path]:
    """Run ``script OUT`` once per kernel class (``ATEN_CPU_CAPABILITY``, 1 thread) and merge:
    one golden file per case, its ``data`` recorded with the first class, ``variants`` holding the
    keys that round differently under the others, ``meta.kernel_classes`` and
    ``meta.environment`` (format version 2)."""
    import subprocess
    import sys
    out_dir = Path(out_dir)
    recorded: Dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # ATEN_CPU_CAPABILITY values this CPU can run, primary (AVX2) first: on an AVX2 CPU
        # AVX2 and DEFAULT; with AVX-512 all three
        for req in environment_module().producible_capabilities():
            sub = Path(tmp) / req
            env = dict(os.environ, ATEN_CPU_CAPABILITY=req, OMP_NUM_THREADS='1',
                       MKL_NUM_THREADS='1', **{_CHILD: '1'})
            subprocess.run([sys.executable, str(script), str(sub)], env=env, check=True)
            first = sorted(sub.glob('*.pt'))[0]
            cls = json.loads(_load(first)['meta_json'])[
                'environment']['kernel_class']
            if cls not in recorded:
                recorded[cls] = sub
        classes = list(recorded)
        primary = recorded[classes[0]]
        written = []
        for path in sorted(primary.glob('*.error.json')):  # the upstream failed on this torch
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / path.name).write_bytes(path.read_bytes())
            written.append(out_dir / path.name)
        for path in sorted(primary.glob('*.pt')):
            raw = _load(path)
            meta = json.loads(raw['meta_json'])
            variants = {}
            for cls in classes[1:]:
                other = _load(recorded[cls] / path.name)
                if other['keys'] != raw['keys'] or other.get('index') != raw.get('index') \
                        or other.get('labels') != raw.get('labels'):
                    raise RuntimeError(f'{path.name}: the schedule differs under {cls}')
                variants[cls] = {k: v for k, v in other['data'].items()
                                 if not _same_bits(v, raw['data'][k])}
            meta['kernel_classes'] = classes
            raw['meta_json'] = json.dumps(meta, sort_keys=True)
            raw['version'] = 2
            raw['variants'] = variants
            written.append(write_atomic(raw, out_dir / path.name))
    return written


def _load(path: Path) -> Dict[str, Any]:
    """``torch.load`` of a file this module wrote (``weights_only`` where torch has it: >= 1.13)."""
    try:
        return torch.load(str(path), map_location='cpu', weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only (these are our own child's files)
        return torch.load(str(path), map_location='cpu')


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        try:
            a, b = a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)
        except (TypeError, RuntimeError):  # torch < 1.9: no view(dtype); equal values then
            pass
    return torch.equal(a, b)
