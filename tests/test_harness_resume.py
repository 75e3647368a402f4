"""Resume equivalence (uninterrupted vs interrupted at every checkpoint) and the doctor.

Where upstream reproduces the uninterrupted run the harness must be bitwise
equal; where docs/runner-behaviour.md documents that it does not (#resume-matrix, #mmcv-resume,
#mmcv-emahook, #mmengine-emahook) the
harness must differ in the same way, and the check names the reason.
"""
from __future__ import annotations

import logging

import pytest
import torch

from compat_ema.cli import main as cli_main
from compat_ema.doctor import diagnose, load_config
from compat_ema.testing import equivalence
from compat_ema.testing.equivalence import GENERATION_HOOKS, check_resume, expected_difference
from helpers import resume_comparable

MMDET = GENERATION_HOOKS['mmdet']
MMCV = GENERATION_HOOKS['mmcv']


@pytest.fixture(autouse=True)
def _legacy_bn_counters(monkeypatch):
    """torch 1.8-1.10: compare runs without the BatchNorm counters (helpers.resume_comparable)."""
    strict = equivalence.tensors_equal
    monkeypatch.setattr(equivalence, 'tensors_equal',
                        lambda a, b: strict(resume_comparable(a), resume_comparable(b)))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)
    torch.set_num_threads(n)


@pytest.mark.parametrize('framework,runner,hook,how,equal', [
    ('mmcv', 'epoch', dict(MMDET, priority=49), 'hook', True),
    ('mmcv', 'epoch', dict(MMCV, priority=49), 'both', True),
    # docs/runner-behaviour.md#resume-matrix: EMA/EMA, raw lost
    ('mmcv', 'epoch', dict(MMDET, priority=49), 'runner', False),
    # docs/runner-behaviour.md#mmcv-emahook: roles inverted
    ('mmcv', 'epoch', dict(MMDET), 'hook', False),
    ('mmcv', 'iter', dict(MMDET, priority=49), 'runner', False),      # repeats an iteration
    ('mmengine', 'iter', GENERATION_HOOKS['mmengine'], 'resume', True),
    ('mmengine', 'epoch', GENERATION_HOOKS['mmengine'], 'auto', True),
    # docs/runner-behaviour.md#mmengine-emahook
    ('mmengine', 'epoch', GENERATION_HOOKS['mmengine'], 'load_from', False),
])
def test_resume_equivalence_matches_upstream(tmp_path, framework, runner, hook, how, equal):
    report = check_resume(framework, runner, [hook], how, root=str(tmp_path))
    assert len(report.checks) == 2                       # every checkpoint but the last
    assert report.all_equal is equal
    assert report.consistent, str(report)
    assert (report.expected_reason is None) is equal
    if not equal and framework == 'mmcv' and runner == 'iter':
        assert all(c.error is None for c in report.checks)   # map_location='cpu' works


def test_runner_resume_at_normal_keeps_raw_but_loses_ema(tmp_path):
    """NORMAL + runner-level resume: the raw trajectory survives, the EMA history does not."""
    report = check_resume('mmcv', 'epoch', [dict(MMDET)], 'runner', root=str(tmp_path))
    # after the last after_train_epoch swap the ema_* buffers hold the raw weights
    assert all(c.ema_equal and not c.model_equal for c in report.checks)


def test_expected_difference_names_the_documented_reason():
    doc = 'docs/runner-behaviour.md#'
    assert expected_difference('mmcv', 'epoch', [dict(priority=49)], 'hook') is None
    assert expected_difference('mmcv', 'epoch', [dict(priority=49)], 'runner').endswith(
        f'({doc}resume-matrix)')
    assert 'roles are inverted' in expected_difference('mmcv', 'epoch', [dict()], 'hook')
    assert expected_difference('mmcv', 'iter', [dict(priority=49)], 'hook').endswith(
        f'({doc}mmcv-resume)')
    assert expected_difference('mmengine', 'epoch', [{}], 'resume') is None


def test_doctor_findings():
    codes = lambda cfg: sorted(f.code for f in diagnose(cfg))  # noqa: E731
    assert codes(dict(custom_hooks=[dict(type='ExpMomentumEMAHook', priority=49, resume_from='w')],
                      resume_from='w')) == []
    assert codes(dict(custom_hooks=[dict(type='ExpMomentumEMAHook', priority=49)],
                      resume_from='w')) == ['E101']
    assert codes(dict(custom_hooks=[dict(type='ExpMomentumEMAHook', resume_from='w')])) == ['E102']
    assert codes(dict(type='ExpMomentumEMAHook')) == ['E103']
    assert codes(dict(custom_hooks=[dict(type='EMAHook', interval=4, priority=49,
                                         resume_from='w')], runner=dict(type='IterBasedRunner'))) == [
        'E104', 'E105', 'E106']
    assert codes(dict(custom_hooks=[dict(type='EMAHook', ema_type='ExpMomentumEMA')],
                      load_from='x.pth')) == ['E201']
    assert codes(dict(custom_hooks=[dict(type='EMAHook', update_buffers=True)], resume=True,
                      test_after_train=True)) == ['E202']
    assert diagnose(dict(custom_hooks=[dict(type='CheckpointHook')])) == []


def test_doctor_cli(tmp_path, capsys):
    cfg = tmp_path / 'yolox.py'
    cfg.write_text("resume_from = None\ncustom_hooks = [dict(type='ExpMomentumEMAHook', "
                   "resume_from=resume_from, momentum=0.0001, priority=49)]\n")
    assert cli_main(['doctor', str(cfg)]) == 0
    assert 'OK' in capsys.readouterr().out
    assert cli_main(['doctor', str(cfg), '--resume-from', 'work/latest.pth']) == 1
    assert 'E101' in capsys.readouterr().out
    assert cli_main(['doctor', "dict(type='ExpMomentumEMAHook')", '--hook-resume-from', 'x']) == 1
    assert 'E102' in capsys.readouterr().out
    assert cli_main(['doctor', 'not a config(']) == 1
    assert load_config('{"type": "EMAHook"}') == {'type': 'EMAHook'}


def test_doctor_resume_matrix_cli(capsys):
    rc = cli_main(['doctor', '--resume-matrix', '--matrix-runner', 'epoch',
                   '--matrix-generation', 'mmengine'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 3
    assert lines[0].endswith('resume=resume: equal') and lines[1].endswith('resume=auto: equal')
    assert 'resume=load_from: differs (load_from without resume restarts' in lines[2]
    assert lines[2].endswith('docs/runner-behaviour.md#mmengine-emahook))')
