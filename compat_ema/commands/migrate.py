"""``compat-ema migrate CONFIG.py [--exact|--native] [-o OUT]``: EMA hooks of a legacy config -> mmengine."""
from __future__ import annotations

import argparse
import os
import sys

from . import DONE, REFUSED, USAGE, fail


def _one_line(exc: Exception) -> str:
    return ' '.join(str(exc).split()) or type(exc).__name__


def _run(args: argparse.Namespace) -> int:
    from ..migrate import report as rep
    from ..migrate.configparse import ConfigError
    from ..migrate.core import UnsupportedHooks, default_output, migrate_config, write_migration
    from ..core.atomic import OutputExists, check_output
    from ..migrate.hookspec import AmbiguousHookError, UnknownKeysError

    if args.sim_iters < 1 or (args.iters is not None and args.iters < 1):
        return fail('migrate', '--iters and --sim-iters must be >= 1', USAGE)
    mode = 'native' if args.native else 'exact'
    out = args.output or default_output(os.path.abspath(args.config), mode)
    try:
        if not (args.dry_run or args.diff):
            check_output(out, inputs=[args.config], force=args.force)
        mig = migrate_config(args.config, mode=mode, out=out, iters=args.iters,
                             keep_unknown=args.keep_unknown, generation=args.generation,
                             legacy_swap=args.legacy_swap)
    except (ConfigError, UnknownKeysError, AmbiguousHookError, UnsupportedHooks,
            OutputExists, ValueError, OSError) as exc:   # refused input: one line, exit 1
        return fail('migrate', _one_line(exc), REFUSED)
    print(rep.migration_report(mig, sim_iters=args.sim_iters))
    if not mig.changed:
        print('nothing to migrate: no mmcv 1.x / mmdet 2.x EMA hook in custom_hooks; '
              'nothing written')
        return 0
    if args.diff:
        import difflib
        with open(mig.source, encoding='utf-8-sig', newline='') as fh:
            before = fh.read()
        sys.stdout.writelines(difflib.unified_diff(
            before.splitlines(True), mig.text.splitlines(True), fromfile=mig.source, tofile=out))
        print('(not written: --diff)')
        return 0
    if args.dry_run:
        print('--- migrated config (not written: --dry-run) ---')
        print(mig.text)
        return 0
    try:
        write_migration(mig, out, force=args.force)
    except (OutputExists, OSError) as exc:
        return fail('migrate', _one_line(exc), REFUSED)
    print(f'wrote {out}')
    return DONE


def register(sub) -> None:
    p = sub.add_parser(
        'migrate', help='rewrite the EMA hooks of an mmcv 1.x / mmdet 2.x config for mmengine',
        description='Read a legacy OpenMMLab Python config without executing it (_base_ files '
                    'included), migrate every EMA hook in custom_hooks and write the new config; '
                    'everything else stays as written. --exact (default) keeps the legacy EMA '
                    'numbers bit for bit with compat_ema\'s legacy types; --native uses only '
                    'mmengine\'s own types and reports how far the numbers move.')
    p.add_argument('config', metavar='CONFIG', help='the legacy config (.py)')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--exact', action='store_true', help='bitwise-equal EMA (default)')
    g.add_argument('--native', action='store_true', help="mmengine's own types only, with a report")
    p.add_argument('-o', '--output', help='output file (default: CONFIG_exact.py / CONFIG_native.py '
                                          'next to the input)')
    p.add_argument('--legacy-swap', action='store_true',
                   help='--exact with LegacyEMAHook: also keep the legacy swap points (EMA weights '
                        'in the model after each train epoch and after training)')
    p.add_argument('--force', action='store_true', help='overwrite an existing output file')
    p.add_argument('--iters', type=int, default=None,
                   help='run length for the report and the native choice (default: the '
                        "config's max_iters, else 10000)")
    p.add_argument('--sim-iters', type=int, default=3000,
                   help='iterations of the toy EMA simulation (default 3000)')
    p.add_argument('--keep-unknown', action='store_true',
                   help='write the output even if EMA-like hooks of unknown types are present '
                        '(they are left as written and listed)')
    p.add_argument('--generation', choices=('mmcv', 'mmengine'), default=None,
                   help='how to read a bare EMAHook (default: from the config\'s keys)')
    p.add_argument('--dry-run', action='store_true', help='print the result, write nothing')
    p.add_argument('--diff', action='store_true',
                   help='print a unified diff against the input, write nothing')
    p.set_defaults(func=_run)
