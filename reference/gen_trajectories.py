"""Record per-iteration EMA trajectories from the REAL upstream (oracle env only).

For every case of ``reference/cases.py`` it builds the real hook (mmcv 1.6.0
``EMAHook``, mmdet 2.28.2 ``BaseEMAHook``/``ExpMomentumEMAHook``/
``LinearMomentumEMAHook``, mmengine 0.10.7 ``EMAHook`` with its averaged
models), drives it through the case's event stream on a fake runner, and writes
``<out_dir>/<case>.pt`` (``reference/trajectories/``) (a compat_ema golden file, kind ``trajectory``) with
the case config in its meta. Never imports compat_ema.

Run through ``reference/generate.py``, or alone:
``.tox/oracle/bin/python reference/gen_trajectories.py [OUT_DIR]``.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import List

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / 'tests' / 'oracle'))

import cases  # noqa: E402
from _format import (fingerprint, is_class_child, pack_trajectory, record_per_class,  # noqa: E402
                     write_atomic)


def upstream_versions() -> dict:
    """Versions of the packages the recording used."""
    import mmcv
    import mmengine
    from importlib.metadata import version
    return {'torch': torch.__version__, 'mmcv': mmcv.__version__, 'mmengine': mmengine.__version__,
            'mmdet': version('mmdet')}


def make_upstream_hook(case: dict):
    """The real upstream hook of ``case``."""
    import upstream
    kwargs = dict(case['hook_kwargs'])
    if case['generation'] == 'mmcv':
        return getattr(upstream.mmcv_hooks(), case['hook'])(**kwargs)
    if case['generation'] == 'mmdet':
        return getattr(upstream.mmdet_ema(), case['hook'])(**kwargs)
    if case['generation'] == 'mmengine':
        return getattr(upstream.mmengine_mods()[0], case['hook'])(**kwargs)
    raise ValueError(f"unknown generation {case['generation']!r}")


def _checked(hook):
    """Refuse anything but a real upstream class (never compat_ema's twin)."""
    mod = type(hook).__module__
    if mod.split('.')[0] not in ('mmcv', 'mmdet', 'mmengine'):
        raise RuntimeError(f'gen_trajectories: {type(hook)} is not an upstream hook ({mod})')
    return hook


def _write_error(case: dict, versions: dict, exc: BaseException, target: Path) -> Path:
    """``<case>.error.json``: the exception the real upstream raised driving ``case``."""
    import json
    path = target / f"{case['name']}.error.json"
    target.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'case': case, 'recorded_with': dict(versions, device='cpu'),
                                'error': f'{type(exc).__name__}: {exc}',
                                'generator': 'reference/gen_trajectories.py'},
                               indent=1, sort_keys=True) + '\n')
    return path


def main(out_dir: Path) -> List[Path]:
    """Write ``out_dir/<case>.pt`` for every case (``reference/trajectories``); return the paths.

    Records every kernel class this CPU can run (one child process each, 1 thread; see
    ``_format.record_per_class``) into one file per case."""
    import upstream
    if not upstream.available():
        raise SystemExit('gen_trajectories: the real mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 '
                         'are not importable here; run with .tox/oracle/bin/python')
    target = Path(out_dir)
    if is_class_child():
        return _record(target)
    written = record_per_class(Path(__file__), target)
    names = {p.name for p in written}
    for stale in sorted(list(target.glob('*.pt')) + list(target.glob('*.error.json'))):
        if stale.name not in names:
            stale.unlink()
            print(f'gen_trajectories: removed stale {stale}')
    return written


def _record(target: Path) -> List[Path]:
    """One kernel class (this process's), at 1 thread."""
    versions = upstream_versions()
    env = fingerprint()
    written = []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # mmcv's deprecated add_(Number, Tensor) overload
            for case in cases.CASES:
                try:
                    labels, snaps = cases.drive(case, lambda c: _checked(make_upstream_hook(c)))
                except RuntimeError as exc:
                    # the upstream itself fails on this torch (mmengine's lerp_ on a dtype
                    # whose CPU lerp_ this torch lacks): record what it raised, not a trajectory
                    written.append(_write_error(case, versions, exc, target))
                    continue
                meta = {'case': case, 'recorded_with': dict(versions, device='cpu'),
                        'generator': 'reference/gen_trajectories.py', 'environment': env}
                written.append(write_atomic(pack_trajectory(labels, snaps, meta),
                                            target / f"{case['name']}.pt"))
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return written


if __name__ == '__main__':
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / 'trajectories'
    for p in main(out):
        print(p)
