"""Differential tests: compat_ema's mmdet 3.x / mmyolo ``ExpMomentumEMA`` vs the real classes.

The real classes are mmdet 3.3.0's and mmyolo 0.6.0's ``ema.py``, executed
directly by :mod:`native`. Every seeded case builds a random small model
(BatchNorm, integer and non-persistent buffers, tied weights; float32,
float64 or bfloat16), random ``momentum``/``gamma``/``interval``/
``update_buffers``/``device``, and trains two identical copies; after *every*
update the real and the compat averaged models (``steps`` and every tensor,
non-persistent buffers included) must agree bit for bit. Each seed is driven
twice: by ``update_parameters`` directly (sometimes with a different model
object than the one the EMA was built from, which mmyolo ignores) and through
the real mmengine 0.10.7 ``EMAHook`` vs compat's ``EMAHook`` built from the
registry names, with ``begin_iter``, val swaps, checkpoint save and
``load_from``/resume restarts. Half the cases run compat's kernels on the
multi-tensor fast path, half on the faithful loop.
"""
from __future__ import annotations

import copy
import os
import random
import types

import pytest
import torch

import native

if not native.native_available():
    if os.environ.get('COMPAT_EMA_NATIVE_DIR'):
        raise RuntimeError('COMPAT_EMA_NATIVE_DIR is set but the native files or mmengine 0.10.7 '
                           'are missing: ' + os.environ['COMPAT_EMA_NATIVE_DIR'])
    pytest.skip('the mmdet 3.3.0 / mmyolo 0.6.0 ema.py files are not extracted '
                '(tests/oracle/extract_native.py; tox -e oracle does it)', allow_module_level=True)

from compat_ema.core import kernels  # noqa: E402
from compat_ema.mmdet3 import ExpMomentumEMA as CompatMMDet3  # noqa: E402
from compat_ema.mmengine.hooks import EMAHook as CompatEMAHook  # noqa: E402
from compat_ema.mmyolo import ExpMomentumEMA as CompatMMYOLO  # noqa: E402

N_CASES = 300
CHUNKS = 6
TARGETS = {
    'mmdet3': (native.mmdet3_cls, CompatMMDet3, ('mmdet3.ExpMomentumEMA', 'MMDet3ExpMomentumEMA')),
    'mmyolo': (native.mmyolo_cls, CompatMMYOLO, ('mmyolo.ExpMomentumEMA', 'MMYOLOExpMomentumEMA')),
}
TARGET_SEED = {'mmdet3': 0, 'mmyolo': 1_000_000}


def case_params(seed: int) -> dict:
    rng = random.Random(seed)
    spec = native.random_spec(rng)
    kw = {}
    if rng.random() < 0.9:
        kw['momentum'] = rng.choice([1e-4, 2e-4, 1e-3, 0.01, 0.1, 0.3, 0.6,
                                     rng.uniform(1e-5, 0.95)])
    if rng.random() < 0.9:
        kw['gamma'] = rng.choice([1, 2, 3, 10, 100, 2000, rng.randint(1, 5000),
                                  rng.uniform(0.5, 50.0)])
    if rng.random() < 0.6:
        kw['interval'] = rng.randint(1, 4)
    if rng.random() < 0.8:
        kw['update_buffers'] = rng.random() < 0.5
    if rng.random() < 0.1:
        kw['device'] = 'cpu'
    n = rng.randint(2, 12)
    return dict(rng=rng, spec=spec, kw=kw, n=n, fast=rng.random() < 0.5,
                other_model=rng.random() < 0.25, begin_iter=min(n, rng.choice([0, 0, 0, 1, 2, 3])))


def _check(where: str, a: dict, b: dict) -> None:
    bad = native.bitwise_diff(a, b)
    assert not bad, f'{where}: differs at {bad}'


def run_direct(target: str, seed: int) -> int:
    """Drive ``update_parameters`` directly; returns the number of updates compared."""
    real_cls, compat_cls, _ = TARGETS[target][0](), TARGETS[target][1], None
    p = case_params(seed)
    src_r = native.build_model(p['spec'], seed)
    src_c = native.clone_model(src_r)
    steps = native.make_steps(p['spec'], src_r, seed, p['n'])
    if p['other_model']:  # update_parameters(other): mmdet3 averages other, mmyolo ignores it
        oth_r, oth_c = native.clone_model(src_r), native.clone_model(src_r)
        other_steps = native.make_steps(p['spec'], src_r, seed + 1, p['n'])
    ema_r = real_cls(src_r, **p['kw'])
    ema_c = compat_cls(src_c, **p['kw'])
    _check(f'{target} seed {seed} init', native.full_state(ema_r), native.full_state(ema_c))
    for i, step in enumerate(steps):
        native.apply_step(src_r, step)
        native.apply_step(src_c, step)
        if p['other_model']:
            native.apply_step(oth_r, other_steps[i])
            native.apply_step(oth_c, other_steps[i])
            ema_r.update_parameters(oth_r)
            ema_c.update_parameters(oth_c)
        else:
            ema_r.update_parameters(src_r)
            ema_c.update_parameters(src_c)
        _check(f'{target} seed {seed} direct update {i} {p["kw"]}',
               native.full_state(ema_r), native.full_state(ema_c))
    return len(steps)


def run_hook(target: str, seed: int) -> int:
    """Drive the real mmengine EMAHook (real class) vs compat's EMAHook (registry name)."""
    from mmengine.hooks import EMAHook as RealEMAHook
    real_cls = TARGETS[target][0]()
    names = TARGETS[target][2]
    p = case_params(seed)
    rng = p['rng']
    kw = dict(p['kw'])
    kw.pop('device', None)
    name = names[seed % 2]

    def new_pair(model_seed):
        src_r = native.build_model(p['spec'], model_seed)
        src_c = native.clone_model(src_r)
        hr = RealEMAHook(ema_type=real_cls, begin_iter=p['begin_iter'], **kw)
        hc = CompatEMAHook(ema_type=name, begin_iter=p['begin_iter'], **kw)
        return src_r, src_c, hr, hc

    src_r, src_c, hr, hc = new_pair(seed)
    rr = types.SimpleNamespace(model=src_r, iter=0, epoch=0, max_iters=p['n'], max_epochs=1,
                               _resume=False)
    rc = types.SimpleNamespace(**vars(rr))
    rc.model = src_c
    for h, r in ((hr, rr), (hc, rc)):
        h.before_run(r)
        h.before_train(r)
    assert type(hc.ema_model) is TARGETS[target][1]
    steps = native.make_steps(p['spec'], src_r, seed, p['n'])
    where = f'{target} seed {seed} hook {name} {kw} begin_iter={p["begin_iter"]}'
    for i, step in enumerate(steps):
        rr.iter = rc.iter = i
        native.apply_step(src_r, step)
        native.apply_step(src_c, step)
        hr.after_train_iter(rr, i)
        hc.after_train_iter(rc, i)
        _check(f'{where} iter {i}', native.full_state(hr.ema_model),
               native.full_state(hc.ema_model))
        event = rng.random()
        if event < 0.2:  # a validation epoch: the sources hold the EMA weights inside it
            hr.before_val_epoch(rr)
            hc.before_val_epoch(rc)
            _check(f'{where} val swap {i}', native.full_state(src_r), native.full_state(src_c))
            hr.after_val_epoch(rr)
            hc.after_val_epoch(rc)
        elif event < 0.35:  # save, then restart from the checkpoint (resume or load_from)
            cks = []
            for h, r, src in ((hr, rr, src_r), (hc, rc, src_c)):
                ck = {'meta': {'iter': i + 1}, 'state_dict': src.state_dict()}
                h.before_save_checkpoint(r, ck)
                cks.append(copy.deepcopy(ck))  # what torch.save + torch.load give
            for key in ('state_dict', 'ema_state_dict'):
                _check(f'{where} checkpoint {key} {i}', cks[0][key], cks[1][key])
            resume = rng.random() < 0.5
            src_r, src_c, hr, hc = new_pair(seed + 7)
            rr.model, rc.model = src_r, src_c
            rr._resume = rc._resume = resume
            for h, r, src, ck in ((hr, rr, src_r, cks[0]), (hc, rc, src_c, cks[1])):
                h.before_run(r)
                h.after_load_checkpoint(r, ck)
                src.load_state_dict(ck['state_dict'])
            _check(f'{where} reloaded (resume={resume}) {i}', native.full_state(hr.ema_model),
                   native.full_state(hc.ema_model))
        _check(f'{where} sources {i}', native.full_state(src_r), native.full_state(src_c))
    return len(steps)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only contend on a shared machine (batch_norm 50x slower)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def kernels_mode():
    saved = kernels.fast_path_enabled()
    yield kernels.set_fast_path
    kernels.set_fast_path(saved)


@pytest.mark.parametrize('chunk', range(CHUNKS))
@pytest.mark.parametrize('target', sorted(TARGETS))
def test_bitwise_random_cases(target, chunk, kernels_mode):
    per = N_CASES // CHUNKS
    updates = 0
    for seed in range(TARGET_SEED[target] + chunk * per, TARGET_SEED[target] + (chunk + 1) * per):
        kernels_mode(case_params(seed)['fast'])
        updates += run_direct(target, seed)
        updates += run_hook(target, seed)
    assert updates >= 2 * 2 * per  # every case compared at least two updates each way


@pytest.mark.parametrize('target', sorted(TARGETS))
@pytest.mark.parametrize('kw', [dict(gamma=0), dict(gamma=-1), dict(momentum=0.0),
                                dict(momentum=1.0), dict(momentum=1.5)])
def test_invalid_arguments_fail_alike(target, kw):
    real_cls, compat_cls = TARGETS[target][0](), TARGETS[target][1]
    spec = native.random_spec(random.Random(5))
    with pytest.raises(AssertionError):
        real_cls(native.build_model(spec, 5), **kw)
    with pytest.raises(AssertionError):
        compat_cls(native.build_model(spec, 5), **kw)


@pytest.mark.parametrize('update_buffers', [False, True])
def test_mmyolo_deepcopy_fails_alike(update_buffers):
    """mmyolo keeps a generator (update_buffers=False): deepcopy fails upstream and here."""
    spec = dict(native.random_spec(random.Random(3)), bn=True)
    real = native.mmyolo_cls()(native.build_model(spec, 3), update_buffers=update_buffers)
    ours = CompatMMYOLO(native.build_model(spec, 3), update_buffers=update_buffers)
    outcomes = []
    for ema in (real, ours):
        try:
            copy.deepcopy(ema)
            outcomes.append('ok')
        except TypeError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == ('ok' if update_buffers else 'TypeError')
