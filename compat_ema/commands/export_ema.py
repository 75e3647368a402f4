"""``compat-ema export-ema IN OUT``: write the EMA weights as a plain state dict, for inference."""
from __future__ import annotations

import argparse

from . import cli_words
from ._checkpoint_cli import add_source_options, read_keys, run_guarded


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import export_ema
    res = export_ema(args.src, args.dst, force=args.force, model_keys=read_keys(args.model_keys),
                     priority=args.source_priority, by_epoch=args.by_epoch, trust=args.trust,
                     strict=args.strict)
    if not args.quiet:
        print(cli_words(res.format()))
    elif res.warnings:   # warnings are never silenced
        print('\n'.join(f'WARNING: {cli_words(w)}' for w in res.warnings))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        'export-ema', help='write the EMA weights of a checkpoint as a plain state dict',
        description='Write the EMA weights of a checkpoint of any generation as a plain state '
                    "dict ({model key: tensor}) under the model's own key names, ready for "
                    'model.load_state_dict() at inference or deployment. IN is read safely and '
                    'never overwritten; OUT is written atomically and an existing OUT needs --force.')
    p.add_argument('src', metavar='IN', help='the checkpoint holding the EMA (.pth)')
    p.add_argument('dst', metavar='OUT', help='the file to write (.pth)')
    p.add_argument('--force', action='store_true', help='replace an existing OUT')
    p.add_argument('--strict', action='store_true',
                   help='refuse (exit 1, nothing written) where the result might not be exactly '
                        'what the upstream needs to continue the run (every WARNING line)')
    p.add_argument('-q', '--quiet', action='store_true',
                   help='print nothing when it succeeds (WARNING lines still print)')
    add_source_options(p)
    p.set_defaults(func=lambda a: run_guarded('export-ema', _run, a))
