"""The ``compat-ema`` command line: a thin layer over the library.

Each subcommand lives in ``compat_ema/commands/<name>.py``, which exposes
``register(subparsers)``; that function adds its parser and sets
``func(args) -> int`` as the default. A module that is absent is skipped.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand modules, in help order
COMMANDS = ('demo', 'inspect', 'convert', 'export_ema', 'migrate', 'schedule', 'doctor')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='compat-ema',
        description='mmcv 1.6 / mmdet 2.28 / mmengine 0.10.7 EMA, bit for bit: demo, '
                    'checkpoint and config migration tools.')
    sub = parser.add_subparsers(dest='command', required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f'compat_ema.commands.{name}')
        except ModuleNotFoundError as exc:
            if exc.name == f'compat_ema.commands.{name}':
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
