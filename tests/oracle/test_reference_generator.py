"""reference/ regenerates as recorded, from the real upstream (oracle env).

The golden trajectories come out byte-identical; the real checkpoints differ only in
run-specific values (timestamps, work dir, wall-clock times: generate.VOLATILE).

Runs the documented command (``reference/generate.py --check``) in a subprocess, so
that nothing compat_ema imported into this pytest process can reach the generator.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_regeneration_matches_the_manifest():
    res = subprocess.run([sys.executable, 'reference/generate.py', '--check', '--only',
                          'gen_trajectories', 'gen_checkpoints'], cwd=str(REPO),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'check: OK, every byte-stable file is identical' in res.stdout
    assert 'gen_trajectories wrote 46 file(s)' in res.stdout
    assert 'differs beyond run-specific values' not in res.stdout
    assert 'mmengine_epoch_ema.pth differs only in run-specific values' in res.stdout
