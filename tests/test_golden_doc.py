"""docs/golden-tests.md's example, run as a user would: recorded once, passing everywhere.

The example block (marked ``<!-- golden-example -->``) is written into a scratch
directory as ``test_ema_golden.py`` beside the golden file committed under
``tests/fixtures/golden_doc/`` (recorded with ``pytest --golden-record`` on an
AMD EPYC, AVX2, MKL, 2 threads: the AVX2 and DEFAULT kernel classes), and run
by pytest in a child process that inherits this run's environment. Under every
CPU/BLAS/thread setting it must pass; with the EMA's momentum one float32 ULP
higher, or updating every second step, it must fail naming the step and key.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compat_ema.testing import environment, golden

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / 'docs' / 'golden-tests.md'
FIXTURE = ROOT / 'tests' / 'fixtures' / 'golden_doc' / 'test_ema_golden'

pytestmark = pytest.mark.golden


def example() -> str:
    text = DOC.read_text(encoding='utf-8')
    start = text.index('```python', text.index('<!-- golden-example -->')) + len('```python\n')
    return text[start:text.index('```', start)]


def run_example(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / 'test_ema_golden.py').write_text(source, encoding='utf-8')
    shutil.copytree(FIXTURE, tmp_path / 'test_ema_golden', dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST_')}
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           '-p', 'no:xdist', '-p', 'no:randomly', *args, 'test_ema_golden.py'],
                          cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


def test_the_committed_recording_holds_both_classes_of_this_kind_of_cpu():
    _, meta = golden.load_golden(FIXTURE / 'ema_run.pt')
    assert meta['kernel_classes'] == ['cpu-x86_64-AVX2', 'cpu-x86_64-DEFAULT']
    assert meta['environment']['kernel_class'] == 'cpu-x86_64-AVX2'
    assert meta['environment']['blas']['name'] == 'mkl'


def test_doc_example_passes_here(tmp_path):
    proc = run_example(tmp_path, example())
    assert proc.returncode == 0, (environment.describe(environment.fingerprint()), proc.stdout)


def test_momentum_one_ulp_higher_fails_naming_step_and_key(tmp_path):
    src = example()
    assert '\nMOMENTUM = 0.01\n' in src
    one_ulp = float(torch.nextafter(torch.tensor(0.01), torch.tensor(1.0)))
    proc = run_example(tmp_path, src.replace('\nMOMENTUM = 0.01\n', f'\nMOMENTUM = {one_ulp!r}\n'))
    assert proc.returncode == 1, proc.stdout
    assert "first at step 1 ('iter 1'), key 'ema.module." in proc.stdout, proc.stdout
    assert 'schedule identical' in proc.stdout or 'kernel class' in proc.stdout, proc.stdout


def test_interval_two_fails_as_a_schedule_change(tmp_path):
    src = example()
    assert '\nINTERVAL = 1\n' in src
    proc = run_example(tmp_path, src.replace('\nINTERVAL = 1\n', '\nINTERVAL = 2\n'))
    assert proc.returncode == 1, proc.stdout
    assert 'EMA schedule differs from the golden: step ' in proc.stdout, proc.stdout
    assert "key 'ema." in proc.stdout, proc.stdout


def test_recording_adds_every_class_this_cpu_runs(tmp_path):
    proc = run_example(tmp_path, example(), '--golden-record')
    assert proc.returncode == 0, proc.stdout
    _, meta = golden.load_golden(tmp_path / 'test_ema_golden' / 'ema_run.pt')
    assert meta['kernel_classes'][0] == environment.kernel_class()  # the recording session's
    if environment.cpu_model() and 'avx2' in environment.producible_capabilities():
        expected = {f'cpu-x86_64-{c.upper()}' for c in environment.producible_capabilities()}
        assert set(meta['kernel_classes']) == expected
