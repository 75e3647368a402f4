"""compat_ema replays the mmedit 0.16.1 / mmagic 1.2.0 / mmgen 0.7.3 ``ExponentialMovingAverageHook``
goldens.

``reference/gan/*.pt`` were recorded from the REAL upstream files by
``reference/gen_gan.py`` (oracle env). Here compat_ema's hooks, built from the
registry, are fed the same recorded generator states and must reproduce every
EMA snapshot (bitwise on CPU); the legacy mmengine hook must reproduce the
mmedit recordings too. The quirks are read back from the recordings.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import gan_native  # tests/oracle/gan_native.py (torch only at import)
from compat_ema.registry import HOOKS
from compat_ema.testing import golden

GAN = Path(__file__).resolve().parents[1] / 'reference' / 'gan'
CASES = {c['name']: c for c in gan_native.golden_cases()}
NAMES = {'mmedit': 'mmedit.ExponentialMovingAverageHook',
         'mmagic': 'mmagic.ExponentialMovingAverageHook',
         'mmgen': 'mmgen.ExponentialMovingAverageHook'}


def load_case(name: str):
    expected, meta = golden.load_golden(GAN / f'{name}.pt')
    assert meta['case'] == json.loads(json.dumps(CASES[name])), (
        f'{name}: gan_native.golden_cases() no longer matches the recording; re-record with '
        '.tox/oracle/bin/python reference/generate.py')
    return expected, meta


def replay(case: dict, expected, hook_name: str, family: str, device: str = 'cpu'):
    src = gan_native.states_from_snapshots(expected.labels, expected.snapshots, 'src.')
    aux = (gan_native.states_from_snapshots(expected.labels, expected.snapshots, 'aux.')
           if case['spec']['aux'] else None)
    kw = json.loads(json.dumps(case['kw']))
    if isinstance(case['kw']['module_keys'], tuple):
        kw['module_keys'] = tuple(kw['module_keys'])
    run = dict(case, kw=kw)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        labels, snaps = gan_native.drive(run, lambda **k: HOOKS.build(dict(type=hook_name, **k)),
                                         family, src, aux, device=device,
                                         ema_init=expected.snapshots[0])
    return golden.Trajectory(labels, snaps)


@pytest.mark.parametrize('name', sorted(CASES))
def test_replays_gan_golden(name):
    expected, meta = load_case(name)
    case = meta['case']
    tol = golden.tolerance_for(torch.__version__, 'cpu')
    golden.assert_matches(expected, replay(CASES[name], expected, NAMES[case['family']],
                                           case['family']),
                          ulp=tol.ulp, atol=tol.atol, context=f'gan golden {name!r}')


@pytest.mark.parametrize('name', sorted(n for n in CASES if n.startswith('mmedit_')))
def test_legacy_mmengine_hook_replays_mmedit(name):
    """Item 2: mmedit's numbers from an mmengine-signature hook."""
    expected, _ = load_case(name)
    tol = golden.tolerance_for(torch.__version__, 'cpu')
    golden.assert_matches(expected, replay(CASES[name], expected,
                                           'legacy.LegacyExponentialMovingAverageHook', 'mmagic'),
                          ulp=tol.ulp, atol=tol.atol, context=f'legacy replay of {name!r}')


@pytest.mark.gpu
@pytest.mark.parametrize('name', sorted(CASES))
def test_replays_gan_golden_cuda(name):
    expected, meta = load_case(name)
    tol = golden.tolerance_for(torch.__version__, 'cuda')
    golden.assert_matches(expected, replay(CASES[name], expected, NAMES[meta['case']['family']],
                                           meta['case']['family'], device='cuda'),
                          ulp=tol.ulp, atol=tol.atol, context=f'gan golden {name!r} (cuda)')


def test_every_file_is_a_case_and_back():
    assert {p.stem for p in GAN.glob('*.pt')} == set(CASES)


def test_recording_names_the_real_upstream():
    _, meta = load_case('mmedit_defaults')
    rec = meta['recorded_with']
    assert (rec['mmedit'], rec['mmagic'], rec['mmgen'], rec['mmcv'], rec['mmengine']) == (
        '0.16.1', '1.2.0', '0.7.3', '1.6.0', '0.10.7')


def _series(traj, key):
    return [s[key] for s in traj.snapshots]


def test_recorded_quirks_are_real():
    """What the upstream recordings show (values read back from the files)."""
    # interval=-1 (default): a copy at before_run (hook-made generator_ema), never updated after
    for fam in ('mmedit', 'mmagic'):
        t, _ = load_case(f'{fam}_defaults')
        ema = _series(t, 'generator_ema.conv1.weight')
        src = _series(t, 'src.conv1.weight')
        assert torch.equal(ema[0], src[0]) and all(torch.equal(e, ema[0]) for e in ema)
        assert not torch.equal(src[-1], src[0])
    # before start_iter (3) every call copies; then (iter + 1 - 3) % 2 == 0 gates: iters 4, 6, 8
    for fam in ('mmedit', 'mmagic'):
        t, _ = load_case(f'{fam}_start_interval')
        ema = _series(t, 'generator_ema.conv1.weight')
        src = _series(t, 'src.conv1.weight')
        for it in range(3):
            assert torch.equal(ema[it + 1], src[it + 1])
        changed = [it for it in range(3, 10) if not torch.equal(ema[it + 1], ema[it])]
        assert changed == [4, 6, 8]
    # non-persistent buffers are never touched after before_run
    t, _ = load_case('mmedit_realesrgan')
    assert all(torch.equal(x, _series(t, 'generator_ema.scale#np')[0])
               for x in _series(t, 'generator_ema.scale#np'))
    # mmedit's momentum_nontrainable=0 copies buffers and frozen parameters;
    # the long counter went through float32 (above 2**24) and came back truncated
    t, _ = load_case('mmedit_realesrgan')
    s = t.snapshots[-1]
    assert torch.equal(s['generator_ema.conv2.weight'], s['src.conv2.weight'])
    assert torch.equal(s['generator_ema.bn.running_mean'], s['src.bn.running_mean'])
    via_f32 = s['src.counter'].to(torch.float32).to(torch.long)
    assert torch.equal(s['generator_ema.counter'], via_f32)
    # mmagic's momentum_nontrainable=1 is b + (a - b) * 1: equal to the source here
    t, _ = load_case('mmagic_realesrgan')
    s = t.snapshots[-1]
    assert torch.equal(s['generator_ema.bn.running_mean'], s['src.bn.running_mean'])


def test_recorded_rampup_is_stylegan3s():
    """mmgen's rampup momentum, read back from the recording, against the formula in float64:
    the new weights get 1 - 0.5 ** (batch / min(kimg * 1000, (iter + 1) * batch * rampup))."""
    t, _ = load_case('mmgen_stylegan_rampup')
    for it in (0, 4, 9):
        m = 0.5 ** (4 / max(min(0.01 * 1000, (it + 1) * 4 * 0.05), 1e-8))
        a = t.snapshots[it + 1]['src.conv1.weight'].double()
        b = t.snapshots[it]['generator_ema.conv1.weight'].double()
        got = t.snapshots[it + 1]['generator_ema.conv1.weight'].double()
        assert torch.allclose(got, a + (b - a) * m, rtol=0, atol=1e-6)
