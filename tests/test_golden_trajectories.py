"""compat_ema replays every golden trajectory recorded from the real upstream.

Each case of ``reference/cases.py`` was driven through the REAL mmcv 1.6.0 /
mmdet 2.28.2 / mmengine 0.10.7 hook by ``reference/gen_trajectories.py``; here
the same event stream drives compat_ema's hook on the same model, and every
snapshot (one after every hook call) must match under the tolerance policy
(bitwise on the recording build, torch 2.13.0+cpu; MIGRATION.md, "Tolerance
policy"), with both the multi-tensor and the faithful kernels. A failure names
the case, the step (hook call index and method) and the keys that differ.
"""
from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from compat_ema.testing import golden, portable
from helpers import fast_path, make_compat_hook, replay_or_upstream_error

REF = Path(__file__).resolve().parents[1] / 'reference'
sys.path.insert(0, str(REF))
import cases  # noqa: E402  (reference/cases.py: models, fake runner, event streams)

pytestmark = pytest.mark.golden  # re-run by .ci/run under other CPU/BLAS/thread settings

TRAJ = REF / 'trajectories'


def replay(case: dict, device: str = 'cpu') -> golden.Trajectory:
    """Drive compat_ema through ``case`` and return its trajectory."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        labels, snaps = cases.drive(case, make_compat_hook, device=device)
    return golden.Trajectory(labels, snaps)


def load_case(name: str):
    expected, meta = golden.load_golden(TRAJ / f'{name}.pt')
    assert json.loads(json.dumps(cases.CASES_BY_NAME[name])) == meta['case'], (
        f'case {name}: reference/cases.py no longer matches the recorded config; '
        're-record with .tox/oracle/bin/python reference/generate.py')
    return expected, meta


@pytest.fixture(params=[True, False], ids=['foreach', 'faithful'])
def kernel_path(request):
    with fast_path(request.param):
        yield request.param


@pytest.mark.parametrize('name', sorted(cases.CASES_BY_NAME))
def test_replays_golden_trajectory_cpu(name, kernel_path):
    _, meta = load_case(name)
    tol = golden.tolerance_for(torch.__version__, 'cpu')
    got = replay_or_upstream_error(meta['case'], lambda: replay(meta['case']))
    if got is None:   # this torch cannot run the case; neither can the upstream (helpers)
        return
    portable.check_golden(TRAJ / f'{name}.pt', got, 'cpu', tol.ulp, tol.atol,
                          context=f'golden case {name!r} (torch {torch.__version__}, cpu, '
                                  f"{'foreach' if kernel_path else 'faithful'} kernels)")


@pytest.mark.gpu
@pytest.mark.parametrize('name', sorted(cases.CASES_BY_NAME))
def test_replays_golden_trajectory_cuda(name):
    _, meta = load_case(name)
    tol = golden.tolerance_for(torch.__version__, 'cuda')
    portable.check_golden(TRAJ / f'{name}.pt', replay(meta['case'], device='cuda'), 'cuda',
                          tol.ulp, tol.atol, context=f'golden case {name!r} (torch '
                                                     f'{torch.__version__}, cuda)')


def test_every_golden_file_is_a_case_and_back():
    files = {p.stem for p in TRAJ.glob('*.pt')}
    assert files == set(cases.CASES_BY_NAME), (
        f'missing files: {sorted(set(cases.CASES_BY_NAME) - files)}, '
        f'stale files: {sorted(files - set(cases.CASES_BY_NAME))}')


def test_recording_metadata_names_the_real_upstream():
    _, meta = load_case('mmcv_warmup_bites')
    rec = meta['recorded_with']
    assert (rec['mmcv'], rec['mmdet'], rec['mmengine']) == ('1.6.0', '2.28.2', '0.10.7')
    assert rec['device'] == 'cpu'


def test_cases_cover_every_class_and_quirk():
    cs = cases.CASES
    hooks = {(c['generation'], c['hook']) for c in cs}
    assert hooks == {('mmcv', 'EMAHook'), ('mmdet', 'BaseEMAHook'), ('mmdet', 'ExpMomentumEMAHook'),
                     ('mmdet', 'LinearMomentumEMAHook'), ('mmengine', 'EMAHook')}
    ema_types = {c['hook_kwargs'].get('ema_type') for c in cs if c['generation'] == 'mmengine'}
    assert ema_types == {'ExponentialMovingAverage', 'MomentumAnnealingEMA',
                         'StochasticWeightAverage'}
    for gen in ('mmcv', 'mmdet', 'mmengine'):
        sub = [c for c in cs if c['generation'] == gen]
        assert {c['model'] for c in sub} >= {'linear_bn', 'conv_bn', 'tied', 'frozen',
                                             'extra_buffers'}, gen
        assert {c['dtype'] for c in sub} == {'float32', 'float64', 'bfloat16'}, gen
        assert 'dp' in {c['wrap'] for c in sub}, gen
    legacy = [c for c in cs if c['generation'] != 'mmengine']
    assert {c['hook_kwargs'].get('interval', 1) for c in legacy} == {1, 2, 3}
    assert {c['hook_kwargs'].get('skip_buffers', False) for c in legacy
            if c['generation'] == 'mmdet'} == {True, False}
    assert {c['stream'][0] for c in cs} == set(cases.STREAMS)
    eng = [c for c in cs if c['generation'] == 'mmengine']
    assert {c['hook_kwargs'].get('update_buffers', False) for c in eng} == {True, False}
    assert any(c['hook_kwargs'].get('begin_iter') for c in eng)
    assert any(c['hook_kwargs'].get('begin_epoch') for c in eng)
    assert any(c['hook_kwargs'].get('begin_iter') and c['hook_kwargs'].get('interval', 1) > 1
               for c in eng)  # interval counts update calls, not iterations
    resumes = {(c['stream'][1]['resume'], c['stream'][1]['keep_ema']) for c in eng
               if c['stream'][0] == 'mmengine_resume'}
    assert resumes == {(True, True), (False, True), (True, False)}
    # warm-up that bites (momentum**interval > (1+0)/(warm_up+0)) and that does not
    bites = {c['hook_kwargs']['momentum'] ** c['hook_kwargs'].get('interval', 1)
             > 1 / c['hook_kwargs']['warm_up'] for c in legacy if 'warm_up' in c['hook_kwargs']}
    assert bites == {True, False}


def test_golden_data_shows_the_quirks_it_claims():
    """Sanity of the recording itself (values from the real upstream, read back here)."""
    t, _ = load_case('mmdet_base_buffers')
    nbt = [int(s['model.bn.num_batches_tracked']) for s in t.snapshots]
    assert nbt[-1] == 0  # integer buffers swapped, never averaged: back to the before_run value
    t, _ = load_case('mmcv_iter_runner_no_swap')
    last = t.snapshots[-1]
    assert not torch.equal(last['model.fc.weight'], last['model.ema_fc_weight'])  # never swapped
    t, _ = load_case('mmengine_ema_begin_iter')
    steps = [int(s['ema.steps']) for s in t.snapshots if 'ema.steps' in s]
    assert steps[-1] == 7 - 3 + 1  # N - begin_iter + 1 (docs/runner-behaviour.md#mmengine-emahook)
    t, _ = load_case('mmengine_ema_begin_iter_interval2')  # begin_iter=4, interval=2
    ema = {int(re.search(r'iter=(\d+)', lab).group(1)): s['ema.module.fc.bias'].clone()
           for lab, s in zip(t.labels, t.snapshots) if 'after_train_iter' in lab}
    changed = [i for i in range(4, 8) if not torch.equal(ema[i], ema[i - 1])]
    assert changed == [5, 7]  # averaging calls at steps 2, 4, not on even iterations
