"""Shared pieces of the checkpoint subcommands: options and one-line errors.

Errors print as ``compat-ema <command>: error: <message>`` with the exit status of
:mod:`compat_ema.commands` (refused input: 1; argparse usage errors: 2; an
unexpected internal error: 3). Set ``COMPAT_EMA_DEBUG=1`` for a traceback.
"""
from __future__ import annotations

import os

from . import REFUSED, fail, internal_error


def add_source_options(p) -> None:
    p.add_argument('--trust', action='store_true',
                   help='full unpickling (runs code stored in the file): only for files you trust')
    p.add_argument('--model-keys', metavar='FILE',
                   help="text file with the model's state_dict() keys, one per line (undoes the "
                        "ema_ renaming without matching by elimination)")
    p.add_argument('--source-priority', metavar='P',
                   help='legacy source: the EMA hook priority (NORMAL, 49, ...), when the file '
                        'cannot tell which side holds the EMA')
    kind = p.add_mutually_exclusive_group()
    kind.add_argument('--iter-based', dest='by_epoch', action='store_const', const=False,
                      help='legacy source was written by IterBasedRunner')
    kind.add_argument('--epoch-based', dest='by_epoch', action='store_const', const=True,
                      help='legacy source was written by EpochBasedRunner')


def read_keys(path):
    if path is None:
        return None
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def run_guarded(command: str, fn, args) -> int:
    from ..checkpoint.errors import CheckpointError
    try:
        return fn(args)
    except (CheckpointError, OSError) as exc:
        if os.environ.get('COMPAT_EMA_DEBUG'):
            raise
        return fail(command, exc, REFUSED, one_line=True)
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        return internal_error(command, exc)
