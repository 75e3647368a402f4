"""Environment fingerprints, kernel classes, per-class golden data and schedule-first checks.

Expected values are written out here (bit patterns built with ``torch.nextafter``), never taken
from the code under test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from compat_ema.checkpoint.safe_load import load_weights_only
from compat_ema.testing import environment, golden, portable, tolerance


def test_fingerprint_names_what_decides_numerics():
    fp = environment.fingerprint()
    json.dumps(fp)
    assert fp['torch'] == torch.__version__
    assert fp['threads'] == torch.get_num_threads()
    assert fp['kernel_class'] == environment.kernel_class()
    if 'BLAS_INFO=mkl' in torch.__config__.show():
        assert fp['blas']['name'] == 'mkl'
    assert fp['cuda'] is None
    assert 'recorded on' in environment.environment_note(fp, dict(fp, threads=7))
    assert 'differs in: threads' in environment.environment_note(fp, dict(fp, threads=7))


@pytest.mark.skipif('avx2' not in environment.producible_capabilities()
                    or sys.platform != 'linux',
                    reason='needs an x86 CPU with AVX2 (the class names measured here)')
@pytest.mark.parametrize('setting,expected', [('default', 'cpu-x86_64-DEFAULT'),
                                              ('avx2', 'cpu-x86_64-AVX2')])
def test_kernel_class_follows_aten_cpu_capability(setting, expected):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=setting)
    out = subprocess.run([sys.executable, '-c', 'from compat_ema.testing import environment as e;'
                          'print(e.kernel_class())'], env=env, stdout=subprocess.PIPE, text=True,
                         check=True).stdout.strip()
    assert out == expected


def _up(x: torch.Tensor, n: int = 1) -> torch.Tensor:
    for _ in range(n):
        x = torch.nextafter(x, torch.full_like(x, float('inf')))
    return x


def _traj(values, labels=('iter 0', 'iter 1')):
    return golden.Trajectory(list(labels), [{'ema.w': torch.tensor(v, dtype=torch.float32),
                                             'ema.steps': torch.tensor(i)}
                                            for i, v in enumerate(values)])


@pytest.fixture
def two_class_file(tmp_path):
    avx2 = _traj([[1.0, 0.5], [0.75, 0.25]])
    scalar = _traj([[1.0, 0.5], [0.75, float(_up(torch.tensor(0.25)))]])
    path = tmp_path / 'g.pt'
    golden.save_golden(path, avx2, meta={'kernel_classes': ['cpu-x86_64-AVX2',
                                                            'cpu-x86_64-DEFAULT']},
                       variants={'cpu-x86_64-DEFAULT': scalar})
    return path, avx2, scalar


def test_variants_store_only_what_differs_and_load_per_class(two_class_file):
    path, avx2, scalar = two_class_file
    raw = load_weights_only(path)   # torch.load(weights_only=True) on every torch
    assert raw['version'] == 2 and list(raw['variants']['cpu-x86_64-DEFAULT']) == ['ema.w']
    got, meta = golden.load_golden(path, kernel_class='cpu-x86_64-DEFAULT')
    assert meta['_selected_class'] == 'cpu-x86_64-DEFAULT'
    golden.assert_matches(scalar, got)
    got, meta = golden.load_golden(path, kernel_class='cpu-x86_64-AVX512')  # equivalent to AVX2
    assert meta['_selected_class'] == 'cpu-x86_64-AVX2'
    golden.assert_matches(avx2, got)
    got, meta = golden.load_golden(path, kernel_class='cpu-aarch64-DEFAULT')
    assert meta['_selected_class'] is None
    golden.assert_matches(avx2, got)


def test_recorded_class_is_bitwise_unrecorded_within_the_bound(two_class_file, monkeypatch):
    path, avx2, scalar = two_class_file
    monkeypatch.setattr(portable, 'kernel_class', lambda device='cpu': 'cpu-x86_64-DEFAULT')
    assert portable.check_golden(path, scalar).recorded_class == 'cpu-x86_64-DEFAULT'
    with pytest.raises(golden.GoldenMismatch, match="step 1 \\('iter 1'\\), key 'ema.w'"):
        portable.check_golden(path, avx2)  # the AVX2 bits are one ULP off on this class
    monkeypatch.setattr(portable, 'kernel_class', lambda device='cpu': 'cpu-aarch64-DEFAULT')
    assert portable.check_golden(path, scalar).recorded_class is None  # 1 ULP: within the bound
    far = _traj([[1.0, 0.5], [0.75, 0.25 + 17 * 2.0 ** -23]])
    with pytest.raises(golden.GoldenMismatch, match='schedule identical; kernel class '
                                                    'cpu-aarch64-DEFAULT has no recording'):
        portable.check_golden(path, far)


def test_schedule_changes_fail_on_every_class(two_class_file, monkeypatch):
    path, _, _ = two_class_file
    monkeypatch.setattr(portable, 'kernel_class', lambda device='cpu': 'cpu-aarch64-DEFAULT')
    idle = _traj([[1.0, 0.5], [1.0, 0.5]])  # the update at iter 1 did not happen
    with pytest.raises(golden.GoldenMismatch, match="schedule differs.*key 'ema.w': changed: "
                                                    "expected True, got False"):
        portable.check_golden(path, idle)
    relabelled = _traj([[1.0, 0.5], [0.75, 0.25]], labels=('iter 0', 'iter 2'))
    with pytest.raises(golden.GoldenMismatch, match='label differs'):
        portable.check_golden(path, relabelled)
    counted = _traj([[1.0, 0.5], [0.75, 0.25]])
    counted.snapshots[1]['ema.steps'] = torch.tensor(2)
    with pytest.raises(golden.GoldenMismatch, match="'ema.steps': value: expected 1, got 2"):
        portable.check_golden(path, counted)


def test_unrecorded_bound_is_the_stated_one():
    row = tolerance.UNRECORDED_CLASS
    assert row.ulp == 16
    assert row.atol['float32'] == 16 * 2.0 ** -23 and row.atol['float64'] == 16 * 2.0 ** -52
