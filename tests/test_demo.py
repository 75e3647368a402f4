"""``compat-ema demo`` end to end (the README Quickstart's main job)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from compat_ema.demo_showcase import DemoOutputError, EPOCHS, MARKER, prepare_out


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('demo')
    proc = subprocess.run([sys.executable, '-m', 'compat_ema', 'demo', '--out', 'artefacts'],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS='ignore'))
    return proc, cwd / 'artefacts'


def test_demo_runs_and_prints_both_parts(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert 'mmcv EMAHook(warm_up=4)' in text  # part 1
    for name in ('legacy_yolox_style', 'legacy_mmcv_style'):
        block = text.split(name + ':', 1)[1].split('\n\n', 1)[0]
        assert '|native-legacy|' in block and 'max|native-legacy|' in block
        rows = re.findall(r'^\s+(\d+)' + r' \|\s+(\S+)' * 5 + '$', block, re.M)
        assert [int(r[0]) for r in rows] == list(range(1, EPOCHS + 1))
        for _, legacy, exact_max, native, at_element, native_max in rows:
            assert float(exact_max) == 0.0                     # exact: bitwise, every tensor
            assert float(native_max) > 0.0                     # native: the numbers move
            # the element column is that element's difference, as printed beside it
            diff = abs(float(native) - float(legacy))   # 3 significant digits printed
            assert abs(float(at_element) - diff) <= 5e-3 * diff + 2e-6
            assert float(at_element) <= float(native_max)


def test_demo_model_trains_sensibly(demo_run):
    """Part 1: the loss falls and the raw weight stays of order 1 (no runaway growth that would
    make EMA gaps look like bugs); the three generations share one training run."""
    proc, _ = demo_run
    part1 = proc.stdout.split('compat-ema demo, part 2')[0]
    rows = re.findall(r'^\s*(\d+)\s+(\S+)\s+(\S+) \|', part1, re.M)
    assert len(rows) == 12
    losses = [float(r[1]) for r in rows]
    raw = [float(r[2]) for r in rows]
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert max(abs(w) for w in raw) < 2.0


def test_demo_exact_claim_holds_on_its_own_checkpoints(demo_run):
    """Re-check from the files: legacy and exact EMA equal bitwise at every epoch."""
    _, out = demo_run
    for name in ('legacy_yolox_style', 'legacy_mmcv_style'):
        for epoch in range(1, EPOCHS + 1):
            f = f'epoch_{epoch}.pth'
            legacy = torch.load(out / 'runs' / name / 'legacy' / f)['state_dict']
            exact = torch.load(out / 'runs' / name / 'exact' / f)['state_dict']
            native = torch.load(out / 'runs' / name / 'native' / f)['state_dict']
            floats = [k for k in exact if exact[k].is_floating_point()]
            assert all(torch.equal(legacy[k], exact[k]) for k in floats), (name, epoch)
            assert not all(torch.equal(legacy[k], native[k]) for k in floats)


def test_demo_artefacts(demo_run):
    _, out = demo_run
    names = set(os.listdir(out))
    for stem in ('legacy_yolox_style', 'legacy_mmcv_style'):
        assert {f'{stem}.py', f'{stem}_exact.py', f'{stem}_native.py',
                f'{stem}_epoch_{EPOCHS}_as_mmengine.pth',
                f'{stem}_epoch_{EPOCHS}_ema_weights.pth'} <= names
    assert MARKER in names and 'report.txt' in names
    exact = (out / 'legacy_yolox_style_exact.py').read_text()
    assert "ema_type='LegacyExpMomentumEMA'" in exact and 'mmengine_plugin' in exact
    assert 'priority=49' in exact and 'resume_from' not in exact.split('custom_hooks')[1]
    conv = torch.load(out / f'legacy_yolox_style_epoch_{EPOCHS}_as_mmengine.pth')
    assert 'ema_state_dict' in conv and int(conv['ema_state_dict']['steps']) == 3 * EPOCHS
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert 'legacy_yolox_style_momentum.png' not in names
    else:
        assert 'legacy_yolox_style_momentum.png' in names


def test_output_directory_rules(tmp_path):
    user = tmp_path / 'mine'
    user.mkdir()
    (user / 'notes.txt').write_text('x')
    with pytest.raises(DemoOutputError, match='--force'):
        prepare_out(str(user))
    assert not (user / MARKER).exists()
    prepare_out(str(user), force=True)
    assert (user / MARKER).exists() and (user / 'notes.txt').read_text() == 'x'
    prepare_out(str(user))  # now marked as a demo directory: accepted
    (tmp_path / 'file').write_text('')
    with pytest.raises(DemoOutputError, match='not a directory'):
        prepare_out(str(tmp_path / 'file'), force=True)
    fresh = tmp_path / 'new' / 'dir'
    assert prepare_out(str(fresh)) == str(fresh)


def test_cli_refuses_a_foreign_directory(tmp_path, capsys):
    from compat_ema.cli import main as cli
    (tmp_path / 'keep.txt').write_text('k')
    assert cli(['demo', '--out', str(tmp_path), '--epochs', '1', '--iters', '1']) == 1
    assert 'not written by compat-ema demo' in capsys.readouterr().err
    assert os.listdir(tmp_path) == ['keep.txt']
