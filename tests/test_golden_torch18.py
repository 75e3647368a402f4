"""The running torch against goldens recorded from the real upstream on Python 3.8 + torch 1.8.1.

``reference/torch18/<case>.pt`` were recorded by ``reference/gen_trajectories.py`` in the
``oracle-torch1.8.1`` tox env (the real mmcv 1.6.0 lite, mmdet 2.28.2 and mmengine 0.10.7 on
torch 1.8.1+cu102, run on the CPU): the upstream on the oldest torch compat_ema supports,
what legacy projects ran. Where the upstream could not run a case on that torch it recorded
the error instead (``<case>.error.json``: mmengine's bfloat16 ``lerp_``, which torch 1.8-1.12
do not have on the CPU). compat_ema replays every case on the running torch, both kernel
paths, within ``TORCH18_POLICY`` (MIGRATION.md, "Tolerance policy", "Goldens recorded on
torch 1.8.1"):

* float32 / float64: bitwise on every torch (the upstream recordings on 1.8.1, 1.13.1 and
  2.13.0 agree bit for bit; compat_ema measured on 1.8.1, 1.10.2, 1.12.1, 1.13.1, 2.6, 2.13);
* bfloat16 (mmcv/mmdet ``mul_`` + ``add_``): bitwise on torch 1.x; 2 bfloat16 ULPs on
  torch 2.x, where the real upstream itself moves by 2 ULPs (the CPU bfloat16 ``mul_``/
  ``add_`` kernels changed between 1.13 and 2.x; ``reference/torch113`` shows the same).

Re-record: ``.tox/oracle-torch1.8.1/bin/python reference/gen_trajectories.py reference/torch18``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

from compat_ema.core.torch_features import lerp_implemented
from compat_ema.testing import golden, portable
from helpers import fast_path, make_compat_hook, replay_or_upstream_error, ulp_policy

pytestmark = pytest.mark.golden  # re-run by .ci/run under other CPU/BLAS/thread settings

REF = Path(__file__).resolve().parents[1] / 'reference'
sys.path.insert(0, str(REF))
import cases  # noqa: E402

GOLDENS = REF / 'torch18'

#: (running torch pattern, ULP bound per dtype): the first match applies (measured rows).
TORCH18_POLICY = (
    ('1.*', {'default': 0}),
    ('*', {'bfloat16': 2, 'default': 0}),
)


RECORDED = sorted(p.stem for p in GOLDENS.glob('*.pt'))
FAILED_UPSTREAM = sorted(p.name[:-len('.error.json')] for p in GOLDENS.glob('*.error.json'))


@pytest.mark.parametrize('fast', [True, False], ids=['foreach', 'faithful'])
@pytest.mark.parametrize('name', RECORDED)
def test_replay_matches_torch18_golden(name, fast, caplog):
    expected, meta = golden.load_golden(GOLDENS / f'{name}.pt')
    assert meta['recorded_with']['torch'].startswith('1.8.1')
    assert json.loads(json.dumps(cases.CASES_BY_NAME[name])) == meta['case'], (
        f'case {name}: reference/cases.py changed since the torch 1.8.1 recording; re-record '
        'with the oracle-torch1.8.1 tox env')
    with fast_path(fast):
        with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger='compat_ema'):
            warnings.simplefilter('ignore')
            labels, snaps = cases.drive(meta['case'], make_compat_hook)
    classes = json.loads((GOLDENS / 'RECORDED.json').read_text())['kernel_classes']
    portable.check_golden(GOLDENS / f'{name}.pt', golden.Trajectory(labels, snaps), 'cpu',
                          ulp=ulp_policy(TORCH18_POLICY, torch.__version__), classes=classes,
                          context=f'torch 1.8.1 golden {name!r} replayed on torch '
                                  f'{torch.__version__} ({"foreach" if fast else "faithful"})')


@pytest.mark.parametrize('fast', [True, False], ids=['foreach', 'faithful'])
@pytest.mark.parametrize('name', FAILED_UPSTREAM)
def test_where_upstream_failed_on_torch18(name, fast):
    """The real mmengine raised on torch 1.8.1 (no CPU bfloat16 lerp_). On a torch without
    that lerp_, compat_ema raises the very same error; on one with it, the case runs and
    the other goldens (reference/trajectories, reference/torch113) check its numbers."""
    record = json.loads((GOLDENS / f'{name}.error.json').read_text())
    case = cases.CASES_BY_NAME[name]
    assert json.loads(json.dumps(case)) == record['case']
    assert record['error'] == 'RuntimeError: "lerp_kernel_scalar" not implemented for \'BFloat16\''
    with fast_path(fast):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if lerp_implemented(getattr(torch, case['dtype'])):
                labels, _ = cases.drive(case, make_compat_hook)
                assert len(labels) > 1
            else:
                assert replay_or_upstream_error(
                    case, lambda: cases.drive(case, make_compat_hook)) is None


def test_torch18_goldens_cover_every_case():
    # cases added after the torch 1.8.1 recording (test_golden_torch113.ADDED_AFTER_TORCH113)
    added_later = {'mmdet_exp_trainval'}
    assert set(RECORDED) | set(FAILED_UPSTREAM) == set(cases.CASES_BY_NAME) - added_later
    assert not set(RECORDED) & set(FAILED_UPSTREAM)
    assert FAILED_UPSTREAM == ['mmengine_bfloat16']


def test_upstream_on_torch18_agrees_with_the_other_recordings():
    """The data behind TORCH18_POLICY: the real upstream on torch 1.8.1 is bitwise equal to
    itself on torch 1.13.1 for every case, and to torch 2.13.0 except bfloat16 (2 ULPs)."""
    for name in RECORDED:
        a, _ = golden.load_golden(GOLDENS / f'{name}.pt')
        b, _ = golden.load_golden(REF / 'torch113' / f'{name}.pt')
        golden.assert_matches(b, a, context=f'{name}: torch 1.8.1 vs 1.13.1')
        c, _ = golden.load_golden(REF / 'trajectories' / f'{name}.pt')
        bf16 = cases.CASES_BY_NAME[name]['dtype'] == 'bfloat16'
        golden.assert_matches(c, a, ulp=2 if bf16 else 0, context=f'{name}: 1.8.1 vs 2.13.0')
        if bf16:   # not vacuous: the bfloat16 recordings do differ across 1.x -> 2.x
            with pytest.raises(AssertionError):
                golden.assert_matches(c, a, context=name)


def test_torch18_files_have_their_recorded_bytes():
    record = json.loads((GOLDENS / 'RECORDED.json').read_text())
    assert record['environment']['torch'].startswith('1.8.1')
    assert record['python'].startswith('3.8.')
    assert (record['environment']['mmcv'], record['environment']['mmdet'],
            record['environment']['mmengine']) == ('1.6.0', '2.28.2', '0.10.7')
    on_disk = {str(p.relative_to(GOLDENS)) for p in GOLDENS.rglob('*')
               if p.is_file() and p.name != 'RECORDED.json'}
    assert set(record['files']) == on_disk
    for name, entry in record['files'].items():
        assert hashlib.sha256((GOLDENS / name).read_bytes()).hexdigest() == entry['sha256'], name
