"""``compat-ema schedule CONFIG_OR_HOOK_DICT [--iters N] [--plot out.png]``: momentum per iteration."""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import List, Optional, Tuple

from . import DONE, REFUSED, fail


def _entries(arg: str, generation) -> List[Tuple[str, object]]:
    """(label, HookSpec) for a config file or a hook dict written on the command line."""
    from ..migrate.configparse import ConfigError, eval_expression, load_config
    from ..migrate.core import find_ema_hooks
    from ..migrate.hookspec import AmbiguousHookError, classify

    if os.path.isfile(arg):
        loaded = load_config(arg)
        found, unknown, _ = find_ema_hooks(loaded, generation)
        for item in unknown:
            print(f'note: not understood (no schedule): {item}', file=sys.stderr)
        if not found:
            raise ConfigError(f'{arg}: no EMA hook in custom_hooks')
        return [(f'custom_hooks[{i}]', spec) for i, _, spec in found]
    if arg.endswith('.py'):
        raise ConfigError(f'{arg}: no such config file')
    try:
        node = ast.parse(arg.strip(), mode='eval').body
    except SyntaxError as exc:
        raise ConfigError(f'not a config file and not a hook dict: {arg!r} ({exc.msg})') from None
    if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name)
                                           and node.func.id == 'dict'):
        # ExpMomentumEMAHook(momentum=1e-4) is read as dict(type='ExpMomentumEMAHook', ...)
        name = _dotted(node.func)
        if name is None:
            raise ConfigError(f'not a hook: {arg!r}')
        node = ast.Call(func=ast.Name('dict', ast.Load()),
                        args=[], keywords=[ast.keyword('type', ast.Constant(name))]
                        + list(node.keywords))
    entry = eval_expression(node, {})
    if not isinstance(entry, dict) or 'type' not in entry:
        raise ConfigError(f'a hook dict needs a type: {arg!r}')
    from ..migrate.gan import classify_gan

    def either(gen):
        return classify(entry, gen) or classify_gan(entry, gen)
    try:
        spec = either(generation)
    except AmbiguousHookError:
        print(f'note: a bare {entry["type"]} exists in the mmcv 1.x and the mmengine generation '
              '(EMAHook: mmcv/mmengine; ExponentialMovingAverageHook: mmedit/mmagic, with opposite '
              'momentum); showing both (write it scoped, or pass --generation)')
        return [('as mmcv', either('mmcv')), ('as mmengine', either('mmengine'))]
    if spec is None:
        raise ConfigError(f'{entry["type"]!r} is not an EMA hook this tool knows (mmcv EMAHook, '
                          'mmdet ExpMomentumEMAHook/LinearMomentumEMAHook, mmengine EMAHook, '
                          'mmedit/mmagic ExponentialMovingAverageHook)')
    return [('hook', spec)]


def _dotted(node) -> Optional[str]:
    """``mmcv.EMAHook`` for a ``Name``/``Attribute`` chain, else None (``ast.unparse``
    exists only from Python 3.9)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f'{base}.{node.attr}'
    return None


def _run(args: argparse.Namespace) -> int:
    from ..migrate.configparse import ConfigError
    from ..migrate.hookspec import AmbiguousHookError, UnknownKeysError
    from ..migrate.schedule import (MatplotlibMissing, format_table, momentum_schedule,
                                    plot_schedules, schedule_notes)
    from ..core.atomic import OutputExists, check_output

    try:
        if args.plot:
            check_output(args.plot, force=args.force)
        entries = _entries(args.hook, args.generation)
        columns = {}
        for label, spec in entries:
            steps = momentum_schedule(spec, args.iters, args.iters_per_epoch)  # type: ignore[arg-type]
            resolved = ', '.join(f'{k}={v!r}' for k, v in spec.resolved().items()  # type: ignore[attr-defined]
                                 if v is not None and k != 'resume_from')
            print(f'{label}: {spec.kind}({resolved})'  # type: ignore[attr-defined]
                  + ('' if spec.priority is None else f' priority={spec.priority!r}'))  # type: ignore[attr-defined]
            print(format_table({spec.kind: steps}, max_rows=args.rows))  # type: ignore[attr-defined]
            for note in schedule_notes(spec, steps):  # type: ignore[arg-type]
                print(f'note: {note}')
            print()
            columns[f'{label} {spec.kind}' if len(entries) > 1 else spec.kind] = steps  # type: ignore[attr-defined]
        if args.plot:
            plot_schedules(columns, args.plot, title=f'{args.hook}'[:80])  # type: ignore[arg-type]
            print(f'wrote {args.plot}')
    except (ConfigError, UnknownKeysError, AmbiguousHookError, ValueError, OutputExists,
            MatplotlibMissing, OSError) as exc:
        return fail('schedule', exc, REFUSED)
    return DONE


def register(sub) -> None:
    p = sub.add_parser(
        'schedule', help='effective EMA momentum and update/skip per iteration, any generation',
        description='Show what an EMA hook does after each training iteration: update (with the '
                    'effective momentum, i.e. the weight of the new weights), skip, copy '
                    "(mmengine's first update) or hold (mmengine before begin_iter). Takes a "
                    "config file or a hook dict such as \"dict(type='EMAHook', momentum=2e-4)\".")
    p.add_argument('hook', metavar='CONFIG_OR_HOOK_DICT',
                   help="a config file (.py) with EMA hooks in custom_hooks, or one hook written "
                        "as a dict, e.g. \"dict(type='ExpMomentumEMAHook', momentum=1e-4)\"")
    p.add_argument('--iters', type=int, default=20, help='iterations to show (default 20)')
    p.add_argument('--iters-per-epoch', type=int, default=None,
                   help="needed for mmengine's begin_epoch")
    p.add_argument('--generation', choices=('mmcv', 'mmengine'), default=None,
                   help='how to read a bare EMAHook (default: from its keys or the config)')
    p.add_argument('--rows', type=int, default=60,
                   help='condense the table beyond this many rows (default 60)')
    p.add_argument('--plot', metavar='OUT.png', help='also plot it (needs matplotlib: '
                                                     "pip install 'compat-ema[plot]')")
    p.add_argument('--force', action='store_true', help='overwrite an existing plot file')
    p.set_defaults(func=_run)
