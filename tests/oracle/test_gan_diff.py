"""Differential tests: compat_ema's mmedit 0.16.1 / mmagic 1.2.0 / mmgen 0.7.3 ``ExponentialMovingAverageHook``
vs the real upstream files (executed by :mod:`gan_native`).

Every seeded case draws a random generator (conv, optional BatchNorm, a
frozen conv, persistent float/long and non-persistent buffers; float32 or
float64; with or without ``generator_ema``; sometimes a second ``aux``/``aux_ema``
pair), random ``interval`` (-1 and 0 included), ``start_iter``,
``interp_cfg`` (and mmgen's ``momentum_policy='rampup'`` with random ``momentum_cfg``), and a seeded "training" of the generator. The real hook and
compat's (built from the registry) drive identical models; after *every*
call (``before_run`` and each ``after_train_iter``) every EMA tensor must be
equal bit for bit, and the warnings raised must be the same.
"""
from __future__ import annotations

import random
import warnings

import pytest

import gan_native as g

try:
    g.native_dir()
except RuntimeError as exc:  # the oracle env extracts them; elsewhere this module is skipped
    pytest.skip(str(exc), allow_module_level=True)

from compat_ema.registry import HOOKS  # noqa: E402

N_CASES = 150
FAMILIES = {'mmedit': (g.mmedit_cls, 'mmedit.ExponentialMovingAverageHook'),
            'mmagic': (g.mmagic_cls, 'mmagic.ExponentialMovingAverageHook'),
            'mmgen': (g.mmgen_cls, 'mmgen.ExponentialMovingAverageHook')}


def _run(case, make_hook, src, aux):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        labels, snaps = g.drive(case, make_hook, case['family'], src, aux)
    return labels, snaps, [(w.category.__name__, str(w.message)) for w in caught]


def _case(family: str, seed: int) -> dict:
    rng = random.Random(seed * 7 + {'mmedit': 0, 'mmagic': 1, 'mmgen': 2}[family])
    spec = g.random_spec(rng)
    kw = dict(module_keys=g.module_keys(spec), **g.random_hook_kw(rng, family))
    return dict(name=f'{family}_{seed}', family=family, seed=seed, n=rng.randint(1, 9),
                spec=spec, kw=kw)


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('chunk', range(3))
def test_bitwise_after_every_call(family, chunk):
    upstream_cls, name = FAMILIES[family]
    real = upstream_cls()
    checked = 0
    for seed in range(chunk, N_CASES, 3):
        case = _case(family, seed)
        src = g.train_states(case['spec'], seed, case['n'])
        aux = g.aux_states(case['spec'], seed, case['n'])
        exp_labels, exp, exp_warn = _run(case, real, src, aux)
        act_labels, act, act_warn = _run(
            case, lambda **kw: HOOKS.build(dict(type=name, **kw)), src, aux)
        assert exp_labels == act_labels
        for label, e, a in zip(exp_labels, exp, act):
            bad = g.bitwise_diff(e, a)
            assert not bad, f'{case}: {label}: differs at {bad}'
        assert exp_warn == act_warn, case
        checked += 1
    assert checked == len(range(chunk, N_CASES, 3))


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('kw', [
    dict(module_keys=['generator_ema']),
    dict(module_keys='generator'),
    dict(module_keys=('generator_ema', 3)),
    dict(module_keys='generator_ema', interp_mode='cubic'),
])
def test_constructor_errors_match(family, kw):
    upstream_cls, name = FAMILIES[family]
    with pytest.raises(Exception) as real:
        upstream_cls()(**kw)
    with pytest.raises(Exception) as ours:
        HOOKS.build(dict(type=name, **kw))
    assert type(real.value) is type(ours.value) is AssertionError


@pytest.mark.parametrize('cfg', [dict(momentum=0.0), dict(momentum=1.0),
                                 dict(momentum_nontrainable=0.0),
                                 dict(momentum_nontrainable=1.5), dict(beta=0.1)])
def test_mmagic_checks_fire_at_the_same_call(cfg):
    """mmagic checks inside ``lerp``: not at construction, nor while only copying."""
    spec = dict(c=1, k=1, bn=True, frozen=True, float_buffer=False, int_buffer=False,
                nonpersistent=False, has_ema=True, aux=False, keys='generator_ema',
                dtype='float32')
    case = dict(family='mmagic', seed=5, n=4, spec=spec,
                kw=dict(module_keys='generator_ema', interval=1, start_iter=2, interp_cfg=cfg))
    src = g.train_states(spec, 5, 4)
    outcomes = []
    for make in (g.mmagic_cls(),
                 lambda **kw: HOOKS.build(dict(type='mmagic.ExponentialMovingAverageHook', **kw))):
        seen = []
        model = g.make_pair(spec, 5)
        hook = make(**case['kw'])
        runner = type('R', (), {})()
        runner.model, runner.iter = model, 0
        hook.before_run(runner)
        for t in range(4):
            g.load_full_state(model.generator, src[t + 1])
            runner.iter = t
            try:
                hook.after_train_iter(runner, t)
                seen.append('ok')
            except Exception as exc:  # noqa: BLE001 - the type is what is compared
                seen.append(type(exc).__name__)
                break
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == ['ok', 'ok'] and outcomes[0][2] != 'ok'


@pytest.mark.parametrize('kw', [dict(module_keys='generator_ema', interp_mode='slerp'),
                                dict(module_keys='generator_ema', momentum_policy='cosine'),
                                dict(module_keys=['generator_ema'])])
def test_mmgen_constructor_errors_match(kw):
    with pytest.raises(Exception) as real:
        g.mmgen_cls()(**kw)
    with pytest.raises(Exception) as ours:
        HOOKS.build(dict(type='mmgen.ExponentialMovingAverageHook', **kw))
    assert type(real.value) is type(ours.value) is AssertionError
