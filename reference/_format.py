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
from typing import Any, Dict, List, Mapping, Sequence

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
