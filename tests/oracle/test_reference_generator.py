"""reference/ regenerates as recorded, from the real upstream (oracle env).

On the recording's machine the golden trajectories come out byte-identical and the real
checkpoints differ only in run-specific values (timestamps, work dir, wall-clock times:
generate.VOLATILE); elsewhere every file is identical or differs only in environment-dependent
fields (the fingerprint, the kernel classes a CPU records, training numerics).

Runs the documented command (``reference/generate.py --check``) in a subprocess, so
that nothing compat_ema imported into this pytest process can reach the generator.
"""
from __future__ import annotations

import re
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
    assert 'OK: no file differs beyond the environment' in res.stdout
    assert 'gen_trajectories wrote 47 file(s)' in res.stdout
    assert 'DIFFERS' not in res.stdout
    assert re.search(r'check: environment-only +checkpoints/mmengine_epoch_ema.pth \(run-specific',
                     res.stdout), res.stdout
