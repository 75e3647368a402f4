"""Measure the tolerance policy: max ULP difference of compat_ema's EMA per generation/dtype.

Replays every golden case of ``reference/cases.py`` through compat_ema on each
requested device (multi-tensor and faithful kernels) and compares, snapshot by
snapshot, every floating-point tensor:

* ``vs golden``: against the real-upstream goldens in ``--goldens`` (default
  ``reference/trajectories``, recorded on torch 2.13.0+cpu; ``reference/torch113/
  trajectories`` holds the torch 1.13.1 recording);
* ``cpu vs cuda``: compat_ema on the CPU against compat_ema on CUDA, same kernels.

Prints one markdown table row per (generation, dtype) and device: the max ULP
distance (in the tensor's own dtype), the max absolute error, and how many cases
were bitwise equal. The rows are what MIGRATION.md's "Tolerance policy" records.

Run (a GPU machine; falls back to the CPU columns alone without CUDA)::

    python benchmarks/gpu_tolerance.py                      # cpu and cuda when present
    python benchmarks/gpu_tolerance.py --devices cpu --goldens reference/torch113/trajectories
    python benchmarks/gpu_tolerance.py --json out.json      # also write the raw numbers
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'reference'))
sys.path.insert(0, str(REPO))

import cases  # noqa: E402  (reference/cases.py: models, fake runner, event streams)

from compat_ema.core import kernels  # noqa: E402
from compat_ema.testing import golden  # noqa: E402


def make_compat_hook(case: dict):
    """compat_ema's hook named by ``case`` (the twin of the recorded upstream hook)."""
    kwargs = dict(case['hook_kwargs'])
    if case['generation'] == 'mmcv':
        from compat_ema.mmcv.runner import hooks
    elif case['generation'] == 'mmdet':
        from compat_ema.mmdet.core.hook import ema as hooks
    else:
        from compat_ema.mmengine import hooks
    return getattr(hooks, case['hook'])(**kwargs)


def replay(case: dict, device: str, fast: bool) -> golden.Trajectory:
    """Drive compat_ema through ``case`` on ``device`` with the chosen kernel path."""
    before = kernels.fast_path_enabled()
    kernels.set_fast_path(fast)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            labels, snaps = cases.drive(case, make_compat_hook, device=device)
    finally:
        kernels.set_fast_path(before)
    return golden.Trajectory(labels, snaps)


def distance(a: golden.Trajectory, b: golden.Trajectory) -> Tuple[float, float]:
    """(max ULP, max abs error) over every float tensor of every common snapshot."""
    if a.labels != b.labels:
        raise ValueError(f'trajectories differ in their labels: {a.labels[:3]}... vs '
                         f'{b.labels[:3]}...')
    max_ulp = max_abs = 0.0
    for sa, sb in zip(a.snapshots, b.snapshots):
        if set(sa) != set(sb):
            raise ValueError(f'snapshot keys differ: {sorted(set(sa) ^ set(sb))[:5]}')
        for k, x in sa.items():
            y = sb[k]
            if not x.dtype.is_floating_point:
                if not torch.equal(x, y):
                    return math.inf, math.inf
                continue
            if x.numel() == 0:
                continue
            max_ulp = max(max_ulp, float(golden.ulp_distance(x, y).max()))
            max_abs = max(max_abs, float((x.double() - y.double()).abs().max()))
    return max_ulp, max_abs


def measure(goldens: Path, devices: List[str], paths: List[bool]) -> List[dict]:
    """One record per (case, device, kernel path)."""
    rows = []
    for case in cases.CASES:
        expected = None
        gpath = goldens / f"{case['name']}.pt"
        if gpath.is_file():
            expected, meta = golden.load_golden(gpath)
        for fast in paths:
            cpu_run = None
            for device in devices:
                try:
                    got = replay(case, device, fast)
                except RuntimeError as exc:   # e.g. no CPU bfloat16 lerp_ on torch 1.8-1.10,
                    print(f"{case['name']} ({device}): {exc}", file=sys.stderr)   # as upstream
                    continue
                row = {'case': case['name'], 'generation': case['generation'],
                       'hook': case['hook'], 'ema_type': case['hook_kwargs'].get('ema_type'),
                       'dtype': case['dtype'], 'device': device,
                       'kernels': 'foreach' if fast else 'faithful'}
                if expected is not None:
                    row['golden_ulp'], row['golden_abs'] = distance(expected, got)
                if device == 'cpu':
                    cpu_run = got
                elif cpu_run is not None:
                    row['cpu_ulp'], row['cpu_abs'] = distance(cpu_run, got)
                rows.append(row)
    return rows


def table(rows: List[dict]) -> str:
    """Markdown: one row per (generation, dtype, device, kernels)."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in rows:
        gen = r['generation'] if r['generation'] != 'mmengine' else \
            f"mmengine/{r['ema_type'] or 'ExponentialMovingAverage'}"
        groups[(gen, r['dtype'], r['device'], r['kernels'])].append(r)
    out = ['| generation | dtype | device | kernels | cases | max ULP vs golden | '
           'max abs vs golden | bitwise vs golden | max ULP cpu vs cuda | max abs cpu vs cuda |',
           '|---|---|---|---|---|---|---|---|---|---|']

    def fmt(vals, spec):
        vals = [v for v in vals if v is not None]
        return format(max(vals), spec) if vals else '-'

    for key in sorted(groups):
        g = groups[key]
        gold = [r.get('golden_ulp') for r in g]
        bitwise = sum(1 for r in g if r.get('golden_ulp') == 0.0)
        has_gold = any(v is not None for v in gold)
        out.append('| ' + ' | '.join([
            key[0], key[1], key[2], key[3], str(len(g)), fmt(gold, '.0f'),
            fmt([r.get('golden_abs') for r in g], '.3g'),
            f'{bitwise}/{len(g)}' if has_gold else '-',
            fmt([r.get('cpu_ulp') for r in g], '.0f'), fmt([r.get('cpu_abs') for r in g], '.3g'),
        ]) + ' |')
    return '\n'.join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--goldens', type=Path, default=REPO / 'reference' / 'trajectories',
                        help='directory of golden trajectory files (default: %(default)s)')
    parser.add_argument('--devices', default=None,
                        help='comma-separated devices (default: cpu, plus cuda when available)')
    parser.add_argument('--kernels', default='foreach,faithful',
                        help='kernel paths to measure (default: %(default)s)')
    parser.add_argument('--json', type=Path, help='also write the per-case records here')
    args = parser.parse_args(argv)
    devices = (args.devices.split(',') if args.devices else
               ['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    for d in devices:
        if d.startswith('cuda') and not torch.cuda.is_available():
            parser.error(f'device {d!r} requested but torch.cuda.is_available() is False')
    paths = [{'foreach': True, 'faithful': False}[k] for k in args.kernels.split(',')]
    if not args.goldens.is_dir():
        parser.error(f'--goldens {args.goldens} is not a directory')
    logging.getLogger('compat_ema').setLevel(logging.ERROR)  # resume cases warn by design
    start = time.perf_counter()
    rows = measure(args.goldens, devices, paths)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    print(f'torch {torch.__version__}, python {platform.python_version()}, gpu: {gpu}, '
          f'goldens: {args.goldens}, {len(cases.CASES)} cases, '
          f'{time.perf_counter() - start:.1f} s')
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({'torch': torch.__version__, 'gpu': gpu,
                                         'goldens': str(args.goldens), 'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
