"""Peak memory of ``compat_ema.checkpoint`` conversions on a ~100 MB checkpoint.

Run: ``python benchmarks/bench_convert_memory.py [--mb 100] [--keep DIR]``

Writes an mmcv-layout EMA checkpoint of about ``--mb`` MB (parameters, their
``ema_*`` copies and SGD momentum buffers, a third each), then runs each
operation in a fresh subprocess and reads that process's peak resident set
size (``ru_maxrss``). It prints, per operation, the peak RSS, the RSS right
before the operation (Python + torch + compat_ema imported), and the ratio of
the growth (peak - before) to the input file size; the target is < 2.5.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, resource, sys, time
def rss_kb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
import torch
from compat_ema import checkpoint as C
op, src, dst = sys.argv[1:4]
before = rss_kb()
t0 = time.perf_counter()
if op == 'export-ema':
    C.export_ema(src, dst, priority='NORMAL')
elif op == 'inspect':
    C.inspect(src)
else:
    C.convert(src, dst, to=op, source_priority='NORMAL')
secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(before_kb=before, peak_kb=peak, seconds=secs)))
'''


def make_checkpoint(path: Path, megabytes: float) -> None:
    """An mmcv EMAHook checkpoint (NORMAL layout) of about ``megabytes`` MB, written by torch."""
    import torch
    from collections import OrderedDict
    n_layers = 8
    per = int(megabytes * 1e6 / 4 / 3 / n_layers)       # float32 values per tensor
    side = int(per ** 0.5)
    g = torch.Generator().manual_seed(0)
    params = OrderedDict((f'layers.{i}.weight', torch.randn(side, side, generator=g))
                         for i in range(n_layers))
    sd = OrderedDict((f"ema_{k.replace('.', '_')}", v.clone()) for k, v in params.items())
    sd.update(params)
    opt = dict(state={i: dict(momentum_buffer=torch.randn(side, side, generator=g))
                      for i in range(n_layers)},
               param_groups=[dict(lr=0.1, momentum=0.9, params=list(range(n_layers)))])
    torch.save(dict(meta=dict(epoch=1, iter=100, mmcv_version='1.6.0'), state_dict=sd,
                    optimizer=opt), path)


def measure(op: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, '-c', CHILD, op, str(src), str(dst)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--mb', type=float, default=100.0)
    p.add_argument('--keep', type=Path, default=None, help='work in DIR and keep the files')
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix='bench_convert_'))
    work.mkdir(parents=True, exist_ok=True)
    src = work / 'mmcv.pth'
    subprocess.run([sys.executable, '-c',
                    f'import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); '
                    f'import bench_convert_memory as b; from pathlib import Path; '
                    f'b.make_checkpoint(Path({str(src)!r}), {args.mb})'], check=True)
    size = src.stat().st_size
    print(f'input: {src} {size / 1e6:.1f} MB')
    engine = work / 'mmengine.pth'
    plan = [('mmengine', src, engine), ('mmcv', engine, work / 'back.pth'),
            ('export-ema', src, work / 'ema.pth'), ('inspect', src, work / 'unused')]
    worst = 0.0
    for op, a, b in plan:
        r = measure(op, a, b)
        in_size = a.stat().st_size
        growth = (r['peak_kb'] - r['before_kb']) * 1024
        ratio = growth / in_size
        worst = max(worst, ratio)
        print(f'{op:>10}: input {in_size / 1e6:6.1f} MB, RSS before {r["before_kb"] / 1024:6.1f} '
              f'MiB, peak {r["peak_kb"] / 1024:6.1f} MiB, growth {growth / 1e6:6.1f} MB = '
              f'{ratio:.2f}x input, {r["seconds"]:.2f} s')
    print(f'worst growth / input size: {worst:.2f}x (target < 2.5x)')
    if args.keep is None:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return 0 if worst < 2.5 else 1


if __name__ == '__main__':
    sys.exit(main())
