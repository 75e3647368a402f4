"""``compat-ema demo``: train a tiny model under each EMA generation, side by side."""
from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..demo import main as demo_main
    demo_main(epochs=args.epochs, iters_per_epoch=args.iters)
    return 0


def register(sub) -> None:
    p = sub.add_parser('demo', help='train a tiny model under each EMA generation, side by side')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--iters', type=int, default=4, help='iterations per epoch')
    p.set_defaults(func=_run)
