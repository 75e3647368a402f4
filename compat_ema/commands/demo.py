"""``compat-ema demo``: three generations side by side, then a legacy config migrated and compared."""
from __future__ import annotations

import argparse

from . import DONE, REFUSED, fail


def _run(args: argparse.Namespace) -> int:
    from ..demo import main as demo_main
    from ..demo_showcase import DemoOutputError
    try:
        demo_main(epochs=args.epochs, iters_per_epoch=args.iters,
                  out=None if args.no_files else args.out, force=args.force)
    except (DemoOutputError, OSError) as exc:
        return fail('demo', exc, REFUSED)
    return DONE


def register(sub) -> None:
    p = sub.add_parser('demo', help='EMA generations side by side; a legacy config migrated, '
                                    're-trained and compared',
                       description='Part 1: a tiny model trained under each EMA generation, side '
                                   'by side. Part 2: built-in legacy configs (YOLOX-style '
                                   'ExpMomentumEMAHook at priority 49, mmcv EMAHook) trained in '
                                   'the fake mmcv runner, migrated with --exact and --native, '
                                   're-trained in the fake mmengine Runner, EMA differences per '
                                   'epoch; configs, checkpoints and a plot go to --out.')
    p.add_argument('--epochs', type=int, default=3, help='part 1: epochs')
    p.add_argument('--iters', type=int, default=4, help='part 1: iterations per epoch')
    p.add_argument('--out', default='compat-ema-demo',
                   help='directory for the artefacts (default ./compat-ema-demo)')
    p.add_argument('--force', action='store_true',
                   help='write into an existing directory not made by compat-ema demo')
    p.add_argument('--no-files', action='store_true', help='part 1 only; write nothing')
    p.set_defaults(func=_run)
