"""The command line as a newcomer meets it: help, overview, exit statuses, messages."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import pytest

from compat_ema.cli import build_parser, main as cli
from compat_ema.commands import DONE, REFUSED, USAGE, cli_words
from helpers import torch_load


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub


def test_every_command_has_a_description_and_every_argument_help():
    _, sub = _subparsers()
    assert set(sub.choices) == {'demo', 'inspect', 'convert', 'export-ema', 'migrate', 'schedule',
                                'doctor'}
    missing = []
    for name, p in sub.choices.items():
        if not (p.description or '').strip():
            missing.append(f'{name}: no description')
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or '').strip():
                what = '/'.join(action.option_strings) or action.metavar or action.dest
                missing.append(f'{name} {what}')
    assert not missing, 'without help text: ' + ', '.join(missing)


def test_bare_command_prints_commands_one_line_each_and_the_workflow(capsys):
    assert cli([]) == DONE
    out = capsys.readouterr().out
    _, sub = _subparsers()
    for name in sub.choices:
        lines = [line for line in out.splitlines() if line.startswith(f'  {name} ')]
        assert len(lines) == 1, (name, out)
    assert 'typical workflow' in out
    for step in ('compat-ema doctor', 'compat-ema inspect', 'compat-ema migrate',
                 'compat-ema convert', 'compat-ema export-ema'):
        assert step in out


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(['--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert 'exit status' in out
    for code, words in ((DONE, 'done'), (REFUSED, 'refused input'), (USAGE, 'usage error')):
        assert f'  {code}  {words}' in out
    with pytest.raises(SystemExit):
        cli(['inspect', '--help'])
    assert '  1  refused input' in capsys.readouterr().out


#: each command given a file that does not exist, in the place it expects one
MISSING = {
    'inspect': ['inspect', '{m}.pth'],
    'convert': ['convert', '{m}.pth', '{d}/out.pth', '--to', 'mmengine'],
    'export-ema': ['export-ema', '{m}.pth', '{d}/out.pth'],
    'migrate': ['migrate', '{m}.py'],
    'schedule': ['schedule', '{m}.py'],
    'doctor': ['doctor', '{m}.py'],
}


@pytest.mark.parametrize('command', sorted(MISSING))
def test_a_missing_file_gives_the_same_exit_status_from_every_command(command, tmp_path, capsys):
    missing = str(tmp_path / 'no_such_file')
    argv = [a.format(m=missing, d=tmp_path) for a in MISSING[command]]
    assert cli(argv) == REFUSED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'compat-ema {command}: error: ')
    assert 'no_such_file' in err[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('command', sorted(MISSING) + ['demo'])
def test_a_bad_command_line_is_a_usage_error(command, tmp_path, capsys):
    argv = [a.format(m=tmp_path / 'x', d=tmp_path) for a in MISSING.get(command, [command])]
    with pytest.raises(SystemExit) as exc:
        cli(argv + ['--no-such-option'])
    assert exc.value.code == USAGE
    assert 'unrecognized arguments: --no-such-option' in capsys.readouterr().err


def test_messages_use_the_cli_words(tmp_path, capsys):
    assert cli_words('x: exists; pass force=True / --force to replace it') == \
        'x: exists; pass --force to replace it'
    assert cli_words('pass by_epoch / --iter-based otherwise') == 'pass --iter-based otherwise'
    assert cli_words('mmcv 1.x / mmdet 2.x') == 'mmcv 1.x / mmdet 2.x'
    from test_migration_doc import make_epoch_12
    src = make_epoch_12(tmp_path)
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep')
    assert cli(['convert', str(src), str(out), '--to', 'mmengine']) == REFUSED
    err = capsys.readouterr().err
    assert '--force' in err and 'force=True' not in err and out.read_bytes() == b'keep'
    # a legacy file that does not say which runner wrote it: the hint names the CLI option
    import torch
    ck = torch_load(src, weights_only=True)
    ck['meta'] = {k: v for k, v in ck['meta'].items() if k in ('epoch', 'iter')}
    bare = tmp_path / 'bare.pth'
    torch.save(ck, bare)
    cli(['inspect', str(bare)])
    text = capsys.readouterr().out
    assert '--iter-based' in text and 'by_epoch' not in text


def test_a_permission_error_names_the_users_output_not_a_temporary_file(tmp_path, monkeypatch,
                                                                        capsys):
    from test_migration_doc import make_epoch_12
    src = make_epoch_12(tmp_path)
    out = tmp_path / 'exported.pth'

    def refuse(*args, dir=None, prefix='', suffix='', **kwargs):
        raise PermissionError(13, 'Permission denied', os.path.join(dir, prefix + 'abc' + suffix))

    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    assert cli(['export-ema', str(src), str(out)]) == REFUSED
    err = capsys.readouterr().err
    assert 'Permission denied' in err and str(out) in err and '.tmp' not in err


def test_migrate_says_where_the_run_length_came_from(tmp_path, capsys):
    cfg = tmp_path / 'c.py'
    cfg.write_text("custom_hooks = [dict(type='ExpMomentumEMAHook', momentum=1e-4, priority=49)]\n")
    assert cli(['migrate', str(cfg), '--dry-run']) == DONE
    out = capsys.readouterr().out
    assert '(default (' not in out
    assert 'the default; pass --iters for your run length' in out


def test_entry_point_alone_runs_and_exits_0():
    proc = subprocess.run([sys.executable, '-m', 'compat_ema'], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and 'typical workflow' in proc.stdout, proc.stderr
