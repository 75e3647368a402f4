"""The ``compat-ema`` command line: a thin layer over the library."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main
    demo_main(epochs=args.epochs, iters_per_epoch=args.iters)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='compat-ema', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    demo = sub.add_parser('demo', help='train a tiny model under each EMA generation, side by side')
    demo.add_argument('--epochs', type=int, default=3)
    demo.add_argument('--iters', type=int, default=4, help='iterations per epoch')
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
