"""``compat-ema convert IN OUT --to {mmcv,mmdet,mmengine,mmedit,mmagic}``: move an EMA checkpoint across
generations, written atomically; never overwrites IN, refuses an existing OUT without --force."""
from __future__ import annotations

import argparse

from . import cli_words
from ._checkpoint_cli import add_source_options, read_keys, run_guarded


def _run(args: argparse.Namespace) -> int:
    from ..checkpoint import convert
    skip = {None: None, 'yes': True, 'no': False}[args.skip_buffers]
    res = convert(args.src, args.dst, to=args.to, force=args.force,
                  model_keys=read_keys(args.model_keys), param_keys=read_keys(args.param_keys),
                  source_priority=args.source_priority, target_priority=args.target_priority,
                  skip_buffers=skip, by_epoch=args.by_epoch, trust=args.trust,
                  strict=args.strict, ema_config=args.ema_config)
    if not args.quiet:
        print(cli_words(res.format()))
    elif res.warnings:   # warnings are never silenced
        print('\n'.join(f'WARNING: {cli_words(w)}' for w in res.warnings))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        'convert', help='convert an EMA checkpoint between mmcv 1.x, mmdet 2.x and mmengine',
        description='Rewrite an EMA checkpoint in the layout another generation reads and '
                    'resumes: mmcv/mmdet ema_* buffers <-> mmengine ema_state_dict, with the '
                    'EMA and raw weights on the side each one expects, the step count and the '
                    'meta counters. IN is read safely (no pickled code runs without --trust) and '
                    'never overwritten; OUT is written atomically and an existing OUT needs '
                    '--force.')
    p.add_argument('src', metavar='IN', help='the checkpoint to convert (.pth)')
    p.add_argument('dst', metavar='OUT', help='the file to write (.pth)')
    p.add_argument('--to', required=True, choices=('mmcv', 'mmdet', 'mmengine', 'mmedit', 'mmagic'),
                   help='the generation whose runner will read OUT (mmedit/mmagic: the '
                        'GAN/restoration family, EMA in generator_ema)')
    p.add_argument('--ema-config', action='store_true',
                   help="--to mmagic: BaseGAN(ema_config=...)'s averaged-model keys "
                        "(<name>_ema.module.*, <name>_ema.steps) instead of the hook's")
    p.add_argument('--force', action='store_true', help='replace an existing OUT')
    p.add_argument('--target-priority', metavar='P',
                   help='legacy target: the EMA hook priority the file should look written by '
                        '(< 50: parameters hold the EMA; default for epoch runners)')
    p.add_argument('--skip-buffers', choices=('yes', 'no'),
                   help='mmdet target: skip_buffers of the hook that will resume it')
    p.add_argument('--param-keys', metavar='FILE',
                   help="text file with the model's parameter names (mmcv tracks parameters "
                        'only); default: guessed from names and dtypes')
    p.add_argument('--strict', action='store_true',
                   help='refuse (exit 1, nothing written) where the result might not be exactly '
                        'what the upstream needs to continue the run (every WARNING line)')
    p.add_argument('-q', '--quiet', action='store_true',
                   help='print nothing when it succeeds (WARNING lines still print)')
    add_source_options(p)
    p.set_defaults(func=lambda a: run_guarded('convert', _run, a))
