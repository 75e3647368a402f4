"""``compat-ema inspect FILE``: describe an EMA checkpoint of any generation, safely.

Exit status: 0 when the file can be loaded safely and nothing is wrong with it, 1
when it cannot be read, references code outside the allowlist (described, never
run) or has a problem (see :mod:`compat_ema.commands`). An EMA side that
nothing in the file decides is reported as UNKNOWN, and what ``convert`` /
``export-ema`` would do with the file is in the verdict lines (``verdicts`` in
``--json``): part of the description, exit 0.
"""
from __future__ import annotations

import argparse
import json

from . import DONE, REFUSED, cli_words
from ._checkpoint_cli import add_source_options, read_keys, run_guarded


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import inspect
    rep = inspect(args.file, trust=args.trust, model_keys=read_keys(args.model_keys),
                  priority=args.source_priority, by_epoch=args.by_epoch)
    print(json.dumps(rep.to_dict(), indent=1) if args.json else cli_words(rep.format()))
    return DONE if rep.safe and not rep.problems else REFUSED


def register(sub) -> None:
    p = sub.add_parser(
        'inspect', help='which generation wrote a checkpoint, where its EMA weights are',
        description='Describe an EMA checkpoint of any generation (mmcv 1.x, mmdet 2.x, '
                    'mmengine): which generation wrote it and the evidence, which keys hold the '
                    'EMA and which the raw weights, the EMA step count, the meta, and anything '
                    'suspicious (missing or orphan EMA keys, non-finite weights, references to '
                    'code). The file is read without running pickled code unless you pass '
                    '--trust. Exit status 1 when the file cannot be read safely or has a problem.')
    p.add_argument('file', metavar='FILE', help='the checkpoint (.pth) to describe')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    add_source_options(p)
    p.set_defaults(func=lambda a: run_guarded('inspect', _run, a))
