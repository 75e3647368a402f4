"""compat_ema replays the mmdet 3.3.0 / mmyolo 0.6.0 ``ExpMomentumEMA`` golden trajectories.

``reference/native/*.pt`` were recorded from the REAL upstream files by
``reference/gen_native.py`` (oracle env). Here compat_ema's classes (directly,
and through compat's mmengine ``EMAHook`` built from the registry names) are fed
the same recorded source states and must reproduce every snapshot under the
tolerance policy (bitwise on torch 2.13.0+cpu), with both kernel paths.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import native  # tests/oracle/native.py (torch only at import; tests/conftest.py puts it on the path)
from compat_ema.mmdet3 import ExpMomentumEMA as MMDet3EMA
from compat_ema.mmengine.hooks import EMAHook
from compat_ema.mmyolo import ExpMomentumEMA as MMYOLOEMA
from compat_ema.core.torch_features import lerp_implemented
from compat_ema.testing import environment, golden, portable
from helpers import fast_path

pytestmark = pytest.mark.golden  # re-run by .ci/run under other CPU/BLAS/thread settings

NATIVE = Path(__file__).resolve().parents[1] / 'reference' / 'native'
CASES = {c['name']: c for c in native.golden_cases()}
CLASSES = {'mmdet3': MMDet3EMA, 'mmyolo': MMYOLOEMA}
HOOK_NAMES = {'mmdet3': 'mmdet3.ExpMomentumEMA', 'mmyolo': 'MMYOLOExpMomentumEMA'}


def load_case(name: str, device: str = 'cpu'):
    expected, meta = golden.load_golden(NATIVE / f'{name}.pt',
                                        kernel_class=environment.kernel_class(device))
    assert meta['case'] == json.loads(json.dumps(CASES[name])), (
        f'{name}: tests/oracle/native.py golden_cases() no longer matches the recording; '
        're-record with .tox/oracle/bin/python reference/generate.py')
    return expected, meta


def replay(case: dict, expected: golden.Trajectory, device: str = 'cpu') -> golden.Trajectory:
    src = native.states_from_snapshots(expected.labels, expected.snapshots, 'src.')
    arg = (native.states_from_snapshots(expected.labels, expected.snapshots, 'arg.')
           if case['driver'] == 'other' else None)
    cls = CLASSES[case['target']]
    name = HOOK_NAMES[case['target']]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        labels, snaps = native.drive(case, cls, lambda **kw: EMAHook(ema_type=name, **kw),
                                     src, arg, device=device)
    return golden.Trajectory(labels, snaps)


@pytest.fixture(params=[True, False], ids=['foreach', 'faithful'])
def kernel_path(request):
    with fast_path(request.param):
        yield request.param


@pytest.mark.parametrize('name', sorted(CASES))
def test_replays_native_golden(name, kernel_path):
    expected, meta = load_case(name)
    tol = golden.tolerance_for(torch.__version__, 'cpu')
    dtype = getattr(torch, meta['case']['spec']['dtype'])
    if meta['case']['target'] == 'mmyolo' and not lerp_implemented(dtype):
        # mmyolo's ExpMomentumEMA.avg_func is one lerp_ (mmyolo 0.6.0 models/layers/ema.py):
        # on a torch whose CPU lerp_ lacks the dtype, it raises torch's error; so must the twin
        with pytest.raises(RuntimeError, match='lerp.*not implemented'):
            replay(meta['case'], expected)
        return
    portable.check_golden(NATIVE / f'{name}.pt', replay(meta['case'], expected), 'cpu', tol.ulp,
                          tol.atol, context=f'native golden {name!r} (torch {torch.__version__}, '
                                  f"{'foreach' if kernel_path else 'faithful'} kernels)")


@pytest.mark.gpu
@pytest.mark.parametrize('name', sorted(CASES))
def test_replays_native_golden_cuda(name, kernel_path):
    expected, meta = load_case(name, 'cuda')
    tol = golden.tolerance_for(torch.__version__, 'cuda')
    portable.check_golden(NATIVE / f'{name}.pt', replay(meta['case'], expected, device='cuda'),
                          'cuda', tol.ulp, tol.atol, context=f'native golden {name!r} (torch '
                                                 f"{torch.__version__}, cuda, "
                                                 f"{'foreach' if kernel_path else 'faithful'})")


def test_every_file_is_a_case_and_back():
    assert {p.stem for p in NATIVE.glob('*.pt')} == set(CASES)


def test_recording_names_the_real_upstream():
    _, meta = load_case('mmdet3_defaults')
    assert meta['recorded_with']['mmengine'] == '0.10.7'
    assert (meta['recorded_with']['mmdet'], meta['recorded_with']['mmyolo']) == ('3.3.0', '0.6.0')


def _series(traj, key):
    return [s[key] for lab, s in zip(traj.labels, traj.snapshots) if key in s]


def test_recorded_quirks_are_real():
    """What the upstream recording itself shows (values read back from the files)."""
    # mmyolo, update_buffers=False: buffers synced on the first update only (spent generator);
    # mmdet 3.x copies them on every update.
    for target, synced_every_time in (('mmdet3', True), ('mmyolo', False)):
        t, _ = load_case(f'{target}_fast_anneal_buffers')
        ema = _series(t, 'ema.module.bn.running_mean')
        src = _series(t, 'src.bn.running_mean')
        assert torch.equal(ema[1], src[1])
        assert torch.equal(ema[-1], src[-1]) is synced_every_time
        if not synced_every_time:
            assert all(torch.equal(e, ema[1]) for e in ema[1:])
    # the first update copies (no blend with the initial weights)
    t, _ = load_case('mmdet3_defaults')
    assert torch.equal(t.snapshots[1]['ema.module.fc1.weight'], t.snapshots[1]['src.fc1.weight'])
    # other_model: mmdet3 averages the model it is given, mmyolo its cached source
    for target, key in (('mmdet3', 'arg.fc1.weight'), ('mmyolo', 'src.fc1.weight')):
        t, _ = load_case(f'{target}_other_model')
        assert torch.equal(t.snapshots[1]['ema.module.fc1.weight'], t.snapshots[1][key])
    # load_from restarts steps at 0 (the next update is a copy); resume keeps it
    t, _ = load_case('mmdet3_hook_load_from')
    i = t.labels.index('load_from 5')
    assert int(t.snapshots[i]['ema.steps']) == 0
    t, _ = load_case('mmdet3_hook_resume')
    i = t.labels.index('resume 4')
    assert int(t.snapshots[i]['ema.steps']) == 5


def test_mmdet3_step_matches_float64_formula():
    """One averaged step of the recording against an independent float64 formula."""
    t, meta = load_case('mmdet3_fast_anneal_buffers')
    kw = meta['case']['kw']
    s1, s2 = t.snapshots[1], t.snapshots[3]  # interval=2: steps 1 skip, steps 2 averages
    m = (1 - kw['momentum']) * torch.exp(torch.tensor(-3.0 / kw['gamma'], dtype=torch.float64)) \
        + kw['momentum']
    want = (1 - m) * s1['ema.module.fc1.weight'] + m * s2['src.fc1.weight']
    assert torch.allclose(s2['ema.module.fc1.weight'], want, rtol=0, atol=1e-15)
