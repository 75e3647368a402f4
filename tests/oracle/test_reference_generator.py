"""The golden trajectories regenerate byte-identically from the real upstream (oracle env).

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
def test_trajectories_regenerate_byte_identical():
    res = subprocess.run([sys.executable, 'reference/generate.py', '--check', '--only',
                          'gen_trajectories'], cwd=str(REPO), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'check: OK, every byte-stable file is identical' in res.stdout
    assert 'gen_trajectories wrote 45 file(s)' in res.stdout
