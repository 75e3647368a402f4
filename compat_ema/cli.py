"""The ``compat-ema`` command line: a thin layer over the library.

Each subcommand lives in ``compat_ema/commands/<name>.py``, which exposes
``register(subparsers)``; that function adds its parser and sets
``func(args) -> int`` as the default. A module that is absent is skipped.
Exit statuses are those of :mod:`compat_ema.commands`, the same for every command.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .commands import DONE, EXIT_CODES

#: subcommand modules, in help order
COMMANDS = ('demo', 'inspect', 'convert', 'export_ema', 'migrate', 'schedule', 'doctor')

DESCRIPTION = ('The EMA of mmcv 1.6, mmdet 2.28 and mmengine 0.10.7, bit for bit, and the tools '
               'to move a legacy project\'s EMA configs and checkpoints to mmengine without '
               'changing its numbers.')

WORKFLOW = """\
typical workflow (moving an mmdet 2.x / mmcv 1.x project to mmengine):
  compat-ema doctor configs/my_config.py            does my EMA setup resume correctly?
  compat-ema inspect work_dirs/epoch_12.pth         where are the EMA weights in this file?
  compat-ema migrate configs/my_config.py           config for mmengine, same EMA numbers
  compat-ema convert work_dirs/epoch_12.pth epoch_12_mmengine.pth --to mmengine
  compat-ema export-ema work_dirs/epoch_12.pth ema_weights.pth   EMA weights for deployment
'compat-ema COMMAND --help' explains a command; README.md and MIGRATION.md explain the rest."""


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the epilogs (workflow, exit statuses) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if '\n' in text:
            return ''.join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='compat-ema', description=DESCRIPTION, epilog=f'{WORKFLOW}\n\n{EXIT_CODES}',
        formatter_class=_Formatter)
    sub = parser.add_subparsers(dest='command', title='commands', metavar='COMMAND')
    for name in COMMANDS:
        try:
            module = importlib.import_module(f'compat_ema.commands.{name}')
        except ModuleNotFoundError as exc:
            if exc.name == f'compat_ema.commands.{name}':
                continue
            raise
        module.register(sub)
    for p in sub.choices.values():  # every command's help ends with the exit statuses
        p.epilog = (p.epilog + '\n\n' if p.epilog else '') + EXIT_CODES
        p.formatter_class = _Formatter
    return parser


def overview(parser: argparse.ArgumentParser) -> str:
    """What ``compat-ema`` alone prints: the commands, one line each, and the typical workflow."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    import textwrap
    lines = textwrap.wrap(f'compat-ema: {DESCRIPTION}', 95)
    lines += ['', 'usage: compat-ema COMMAND [options]', '', 'commands:']
    width = max(len(c.dest) for c in sub._choices_actions)
    for choice in sub._choices_actions:
        lines.append(f'  {choice.dest:<{width}}  {choice.help}')
    lines += ['', WORKFLOW, '', "'compat-ema --help' also lists the exit statuses."]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print(overview(parser))
        return DONE
    return int(args.func(args) or 0)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
