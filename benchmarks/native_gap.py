"""Print the legacy-vs-native EMA gap tables quoted in MIGRATION.md.

``python benchmarks/native_gap.py`` runs :func:`compat_ema.migrate.native_gap.native_gap`
with the YOLOX settings (momentum 0.0001, total_iter/gamma 2000, 3000
iterations, epochs of 100 iterations, restart at iteration 1500) and prints
the parameter and buffer tables in markdown. ``tests/test_native_gap.py``
checks that MIGRATION.md quotes exactly these tables (on torch 2.13.0+cpu).
Options change the run (``--n-iters``, ``--total-iter``, ``--restart-at``...).
"""
from __future__ import annotations

import argparse
import time

from compat_ema.migrate.native_gap import format_table, native_gap


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n-iters', type=int, default=3000)
    p.add_argument('--momentum', type=float, default=0.0001)
    p.add_argument('--total-iter', type=int, default=2000, help='legacy total_iter = native gamma')
    p.add_argument('--restart-at', type=int, default=1500)
    p.add_argument('--epoch-len', type=int, default=100)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = native_gap(n_iters=args.n_iters, momentum=args.momentum, total_iter=args.total_iter,
                        restart_at=args.restart_at, epoch_len=args.epoch_len, seed=args.seed)
    print('Largest |legacy EMA - native EMA| over the parameters:\n')
    print(format_table(report, 'params'))
    print('\nLargest |legacy EMA - native EMA| over the BatchNorm running stats:\n')
    print(format_table(report, 'buffers'))
    print()
    for row in report.rows:
        print(f'- {row.name}: {row.what}')
    for note in report.notes:
        print(f'- {note}')
    print(f'\n({time.perf_counter() - t0:.1f} s)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
