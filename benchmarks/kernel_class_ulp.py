"""Per-op rounding difference between torch's kernel classes, for the tolerance policy.

Runs each EMA update op (``mul_`` then ``add_(alpha=)`` as mmcv/mmdet do, ``lerp_`` as mmengine
does, the SWA ``add_((x - avg) / (n + 1))``) on the same random inputs in one child process
per ``ATEN_CPU_CAPABILITY`` this CPU can run, and prints, per op and dtype, the largest
difference between the classes in ULPs of the result and in ULPs of the larger operand
(``max(|a|, |b|)``: the scale of one rounding step). Used for
``compat_ema.testing.tolerance.UNRECORDED_CLASS`` (docs/golden-tests.md).

    python benchmarks/kernel_class_ulp.py
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import torch

N = 1 << 16
MOMENTA = (0.0002, 0.01, 0.3, 0.9, 0.9998)
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def run_ops() -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for dtype in DTYPES:
        ema = (torch.rand(N, generator=g, dtype=torch.float64) * 4 - 2).to(dtype)
        src = (torch.rand(N, generator=g, dtype=torch.float64) * 4 - 2).to(dtype)
        for m in MOMENTA:
            out[f'mul_add/{dtype}/{m}'] = ema.clone().mul_(m).add_(src, alpha=1 - m)
            out[f'lerp/{dtype}/{m}'] = ema.clone().lerp_(src, m)
        for n in (1, 3, 10):
            out[f'swa/{dtype}/{n}'] = ema.clone().add_((src - ema) / (n + 1))
    return out


def main() -> None:
    if os.environ.get('KERNEL_CLASS_CHILD'):
        buf = io.BytesIO()
        torch.save({'cap': torch.backends.cpu.get_cpu_capability(), 'out': run_ops()}, buf)
        sys.stdout.buffer.write(buf.getvalue())
        return
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
    from compat_ema.testing.environment import producible_capabilities
    from compat_ema.testing.golden import ulp_distance
    runs = {}
    for cap in producible_capabilities():
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, KERNEL_CLASS_CHILD='1', OMP_NUM_THREADS='1')
        raw = subprocess.run([sys.executable, __file__], env=env, stdout=subprocess.PIPE,
                             check=True).stdout
        runs[cap] = torch.load(io.BytesIO(raw), weights_only=True)['out']
    caps = list(runs)
    print(f'torch {torch.__version__}; classes compared: {caps}; {N} elements per op')
    a, b = runs[caps[0]], runs[caps[-1]]
    rows = {}
    for key in a:
        if key.startswith('_'):
            continue
        op, dtype, _ = key.split('/')
        x, y = a[key], b[key]
        u = ulp_distance(x, y)
        scale = torch.maximum(x.double().abs(), y.double().abs()).clamp_min(1.0)
        eps = torch.finfo(x.dtype).eps
        rel = ((x.double() - y.double()).abs() / (scale * eps))
        n_diff = int((u > 0).sum())
        r = rows.setdefault((op, dtype), [0, 0.0, 0.0])
        r[0] += n_diff
        r[1] = max(r[1], float(u.max()))
        r[2] = max(r[2], float(rel.max()))
    print(f"{'op':8} {'dtype':15} {'elements differing':>18} {'max ULP of result':>18} "
          f"{'max in eps x max(1,|value|)':>28}")
    for (op, dtype), (n, mu, mr) in rows.items():
        print(f'{op:8} {dtype:15} {n:18d} {mu:18.0f} {mr:28.2f}')


if __name__ == '__main__':
    main()
