"""The current torch against goldens recorded from the real upstream on torch 1.13.1.

``reference/torch113/<case>.pt`` were recorded by ``reference/gen_trajectories.py``
in an oracle environment with torch 1.13.1 (+cu117 wheel, run on the CPU), mmcv
1.6.0 (lite), mmengine 0.10.7 and mmdet 2.28.2: the upstream on the torch its
users had. Here compat_ema replays every case on the running torch and must
match them within the cross-version rows of the tolerance policy (MIGRATION.md,
"Tolerance policy", "Goldens recorded on torch 1.13.1"):

* float32 / float64: bitwise on every torch measured (1.13.1, 2.6.0, 2.13.0);
* bfloat16: the real upstream itself moves by 2 bfloat16 ULPs between torch
  1.13.1 and 2.13.0 (mmcv/mmdet ``mul_`` + ``add_``), so 2 ULPs off 1.13.1.

Re-record: ``<oracle-113 python> reference/gen_trajectories.py reference/torch113``.
"""
from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

from compat_ema.testing import golden, portable
from helpers import fast_path, make_compat_hook, replay_or_upstream_error, ulp_policy

REF = Path(__file__).resolve().parents[1] / 'reference'
sys.path.insert(0, str(REF))
import cases  # noqa: E402

pytestmark = pytest.mark.golden  # re-run by .ci/run under other CPU/BLAS/thread settings

GOLDENS = REF / 'torch113'

#: (running torch pattern, ULP bound per dtype): the first match applies (measured rows).
TORCH113_POLICY = (
    ('1.13.1*', {'default': 0}),
    ('*', {'bfloat16': 2, 'default': 0}),
)


#: cases added to reference/cases.py after the torch 1.13.1 recording (recorded on torch 2.13.0
#: only, reference/trajectories): re-record torch113/ with its recipe to cover them
ADDED_AFTER_TORCH113 = {'mmdet_exp_trainval'}
RECORDED_113 = sorted(set(cases.CASES_BY_NAME) - ADDED_AFTER_TORCH113)


@pytest.mark.parametrize('fast', [True, False], ids=['foreach', 'faithful'])
@pytest.mark.parametrize('name', RECORDED_113)
def test_replay_matches_torch113_golden(name, fast, caplog):
    expected, meta = golden.load_golden(GOLDENS / f'{name}.pt')
    assert meta['recorded_with']['torch'].startswith('1.13.1')
    assert json.loads(json.dumps(cases.CASES_BY_NAME[name])) == meta['case'], (
        f'case {name}: reference/cases.py changed since the torch 1.13.1 recording; re-record '
        'with the torch 1.13.1 oracle env (README, "Torch version matrix")')
    with fast_path(fast):
        with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger='compat_ema'):
            warnings.simplefilter('ignore')
            got = replay_or_upstream_error(meta['case'],
                                           lambda: cases.drive(meta['case'], make_compat_hook))
    if got is None:   # this torch cannot run the case; neither can the upstream (helpers)
        return
    classes = json.loads((GOLDENS / 'RECORDED.json').read_text())['kernel_classes']
    portable.check_golden(GOLDENS / f'{name}.pt', golden.Trajectory(*got), 'cpu',
                          ulp=ulp_policy(TORCH113_POLICY, torch.__version__), classes=classes,
                          context=f'torch 1.13.1 golden {name!r} replayed on torch '
                                  f'{torch.__version__} ({"foreach" if fast else "faithful"})')


def test_torch113_goldens_cover_every_case():
    assert {p.stem for p in GOLDENS.glob('*.pt')} == set(RECORDED_113)
    assert ADDED_AFTER_TORCH113 <= set(cases.CASES_BY_NAME)


def test_upstream_itself_is_bitwise_across_torch_for_float32():
    """The recordings agree with each other: torch 1.13.1 and 2.13.0 upstream runs are
    bitwise equal for every float32/float64 case (the data behind the policy rows)."""
    for name in RECORDED_113:
        case = cases.CASES_BY_NAME[name]
        a, _ = golden.load_golden(GOLDENS / f'{name}.pt')
        b, _ = golden.load_golden(REF / 'trajectories' / f'{name}.pt')
        if case['dtype'] == 'bfloat16':
            golden.assert_matches(b, a, ulp=2, context=name)
            continue
        golden.assert_matches(b, a, context=name)


def test_torch113_files_have_their_recorded_bytes():
    import hashlib
    record = json.loads((GOLDENS / 'RECORDED.json').read_text())
    assert record['environment']['torch'] == '1.13.1'
    assert (record['environment']['mmcv'], record['environment']['mmdet'],
            record['environment']['mmengine']) == ('1.6.0', '2.28.2', '0.10.7')
    assert set(record['files']) == {p.name for p in GOLDENS.glob('*.pt')}
    for name, entry in record['files'].items():
        assert hashlib.sha256((GOLDENS / name).read_bytes()).hexdigest() == entry['sha256'], name
