"""A clean first run: the Quickstart's first command prints no warning line.

The same check runs in a fresh venv holding only the runtime dependencies in ``tox -e
quickstart`` (part of ``.ci/run``); here it runs in the test env, and the dependency that keeps
torch quiet is checked to be declared.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quickstart_check import demo_command, reaching_warnings, warning_lines

ROOT = Path(__file__).resolve().parents[1]


def _runtime_dependencies():
    text = (ROOT / 'pyproject.toml').read_text(encoding='utf-8')
    block = re.search(r'^dependencies\s*=\s*\[(.*?)\]', text, re.M | re.S).group(1)
    return [re.split(r'[<>=!~ ;\[]', d.strip().strip('"\''))[0]
            for d in block.split(',') if d.strip()]


def test_numpy_is_a_runtime_dependency():
    assert 'numpy' in _runtime_dependencies(), _runtime_dependencies()


def test_torch_warns_without_numpy():
    """Why numpy is declared: without it, importing torch prints a warning line."""
    proc = subprocess.run([sys.executable, '-W', 'default', '-c',
                           "import sys; sys.modules['numpy'] = None; import torch"],
                          capture_output=True, text=True, timeout=300)
    if torch.__version__.startswith(('1.12.', '1.13.')):
        # measured: torch 1.12 and 1.13 import silently without numpy (they warn only when a
        # tensor meets numpy); every other torch of the matrix warns or fails at import
        assert proc.returncode == 0 and 'warn' not in proc.stderr.lower(), proc.stderr
        return
    # torch 1.8 does not even import without it (ImportError: numpy.core.multiarray failed to import)
    assert 'Failed to initialize NumPy' in proc.stderr or (
        'numpy.core.multiarray failed to import' in proc.stderr and proc.returncode != 0)


@pytest.mark.slow
def test_quickstart_demo_prints_no_warning_line(tmp_path):
    assert warning_lines(demo_command() + ['demo', '--out', str(tmp_path / 'demo')],
                         str(tmp_path)) == []


def test_the_check_sees_warnings(tmp_path):
    code = "import warnings; warnings.warn('boo', UserWarning); print('done')"
    assert len(warning_lines([sys.executable, '-c', code], str(tmp_path))) == 1


def test_the_check_counts_what_reaches_a_user():
    out = '\n'.join([
        '/venv/site-packages/torch/torch_version.py:3: DeprecationWarning: pkg_resources is deprecated',
        '  import pkg_resources',
        '/usr/lib/python3.11/tempfile.py:895: ResourceWarning: Implicitly cleaning up <TemporaryDirectory>',
        '/venv/site-packages/compat_ema/demo.py:10: DeprecationWarning: ours',
        '  warnings.warn("ours", DeprecationWarning)',
        '/venv/site-packages/torch/nn/modules/module.py:1: UserWarning: a dependency warns',
        'plain output', 'WARNING: a logger line'])
    assert reaching_warnings(out) == [
        '/venv/site-packages/compat_ema/demo.py:10: DeprecationWarning: ours',
        '/venv/site-packages/torch/nn/modules/module.py:1: UserWarning: a dependency warns',
        'WARNING: a logger line']
