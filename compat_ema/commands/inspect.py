"""``compat-ema inspect FILE``: describe an EMA checkpoint of any generation, safely.

Exit status: 0 when the file can be loaded safely, 1 when it cannot be read or
references code outside the allowlist (described, never run). An EMA side that
nothing in the file decides is reported as UNKNOWN, and what ``convert`` /
``export-ema`` would do with the file is in the verdict lines (``verdicts`` in
``--json``): part of the description, exit 0.
"""
from __future__ import annotations

import argparse
import json

from ._checkpoint_cli import add_source_options, read_keys, run_guarded


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import inspect
    rep = inspect(args.file, trust=args.trust, model_keys=read_keys(args.model_keys),
                  priority=args.source_priority, by_epoch=args.by_epoch)
    print(json.dumps(rep.to_dict(), indent=1) if args.json else rep.format())
    return 0 if rep.safe and not rep.problems else 1


def register(sub) -> None:
    p = sub.add_parser('inspect', help='which generation wrote a checkpoint, where its EMA '
                                       'weights are, steps, meta, anything suspicious')
    p.add_argument('file')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    add_source_options(p)
    p.set_defaults(func=lambda a: run_guarded('inspect', _run, a))
