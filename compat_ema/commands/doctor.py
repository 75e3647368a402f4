"""``compat-ema doctor``: warn when an EMA setup's priority and resume path lose EMA history."""
from __future__ import annotations

import argparse
import logging
import warnings

from . import DONE, REFUSED, fail


def _matrix(args: argparse.Namespace) -> int:
    from ..testing.equivalence import resume_matrix
    from ..testing.scenario import single_thread
    logging.disable(logging.WARNING)  # the runners' key-mismatch messages are expected here
    try:
        with single_thread(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            reports = resume_matrix(runners=args.matrix_runner or ('epoch', 'iter'),
                                    generations=args.matrix_generation or ('mmcv', 'mmdet', 'mmengine'))
    finally:
        logging.disable(logging.NOTSET)
    for report in reports:
        print(report)
    return DONE if all(r.consistent for r in reports) else REFUSED


def _run(args: argparse.Namespace) -> int:
    from ..doctor import diagnose, format_findings, load_config
    if args.resume_matrix:
        return _matrix(args)
    try:
        config = load_config(args.config) if args.config else {}
        extra = load_config(args.hook) if args.hook else None
    except (ValueError, OSError) as exc:
        return fail('doctor', exc, REFUSED)
    if 'type' in config and 'custom_hooks' not in config:
        config = dict(custom_hooks=[config])
    config = dict(config)
    hooks = [dict(h) for h in config.get('custom_hooks') or []]
    if extra is not None:
        hooks.append(extra)
    if args.priority is not None:
        for h in hooks:
            h['priority'] = int(args.priority) if args.priority.isdigit() else args.priority
    if args.hook_resume_from:
        for h in hooks:
            h['resume_from'] = args.hook_resume_from
    config['custom_hooks'] = hooks
    if args.resume_from:
        config['resume_from'] = args.resume_from
    if args.load_from:
        config['load_from'] = args.load_from
    if args.resume:
        config['resume'] = True
    if args.runner:
        config['runner'] = dict(type='IterBasedRunner' if args.runner == 'iter' else 'EpochBasedRunner')
    if args.test_after_train:
        config['test_after_train'] = True
    model = config.get('model')
    if not hooks and not (isinstance(model, dict) and 'ema_config' in model):
        return fail('doctor', 'no EMA hook found in the config (custom_hooks) or --hook', REFUSED)
    findings = diagnose(config, generation=args.generation)
    print(format_findings(findings))
    return REFUSED if any(f.severity == 'warning' for f in findings) else DONE


def register(sub) -> None:
    p = sub.add_parser('doctor', help='warn when EMA hook priority and resume path lose EMA history',
                       description='Read an mmcv/mmdet 2.x or mmengine config (a .py/.json file or '
                                   'an inline dict) and report EMA setups that do not resume '
                                   'exactly (docs/runner-behaviour.md#resume-matrix explains why). '
                                   'Exit status 1 when a warning is found.')
    p.add_argument('config', metavar='CONFIG', nargs='?',
                   help='config file (.py/.json), or a dict literal of a config or of one hook')
    p.add_argument('--hook', help='an EMA hook dict literal to add to custom_hooks')
    p.add_argument('--priority', help='override the EMA hooks\' priority (int or name)')
    p.add_argument('--resume-from', help='runner-level resume_from (mmdet cfg.resume_from)')
    p.add_argument('--hook-resume-from', help='the EMA hooks\' own resume_from')
    p.add_argument('--load-from', help='load_from checkpoint')
    p.add_argument('--resume', action='store_true', help='mmengine resume=True')
    p.add_argument('--runner', choices=('epoch', 'iter'), help='mmcv runner type')
    p.add_argument('--generation', choices=('mmcv', 'mmengine'), help='force the API generation')
    p.add_argument('--test-after-train', action='store_true',
                   help='mmengine: runner.test() is called after runner.train() on the same runner')
    p.add_argument('--resume-matrix', action='store_true',
                   help='run the harness resume-equivalence matrix (uninterrupted vs resumed at '
                        'every checkpoint, per runner mode, generation, priority and resume path) '
                        'and print which paths reproduce the uninterrupted run bit for bit')
    p.add_argument('--matrix-runner', action='append', choices=('epoch', 'iter'),
                   help='limit --resume-matrix to these runner modes')
    p.add_argument('--matrix-generation', action='append', choices=('mmcv', 'mmdet', 'mmengine'),
                   help='limit --resume-matrix to these EMA generations')
    p.set_defaults(func=_run)
