"""Converted checkpoints resumed by the REAL runners continue training as the uninterrupted run.

* mmcv 1.6 -> mmengine 0.10.7: an ``epoch_1.pth`` of the real EpochBasedRunner + mmcv
  ``EMAHook`` (priority NORMAL and 49), converted, resumed by the real mmengine ``Runner``
  (``resume=True``) with the real mmengine ``EMAHook``:
  - raw weights, BN buffers: bitwise equal to the uninterrupted legacy run;
  - EMA with ``ema_type='LegacyMMCVEMA'`` (compat_ema.legacy, mmcv numerics): bitwise equal;
  - EMA with mmengine's own ``ExponentialMovingAverage``: the documented difference only:
    ``lerp_`` instead of mmcv's ``mul_(1-m).add_(m, p)`` rounding (a few float32 ulps).
* mmengine -> mmcv: an mmengine ``epoch_1.pth`` (with HistoryBuffer objects, read safely),
  converted, resumed by the real mmcv EpochBasedRunner through the EMA hook's ``resume_from``.

The converted files are loaded by the real runners under torch 2.13's default
``weights_only=True`` (no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD): they hold only plain data.
"""
from __future__ import annotations

import pytest
import torch

from compat_ema import checkpoint as C
from compat_ema.core.torch_features import bits_view
from runner_kit import ema_hook_of, make_batches, make_weights, real_runners, run_engine, \
    run_mmcv  # noqa: F401  (real_runners is a fixture)

EMA_MMCV = dict(type='EMAHook', momentum=0.2, warm_up=1)
PARAMS = ['fc1.weight', 'fc1.bias', 'bn.weight', 'bn.bias', 'fc2.weight', 'fc2.bias']
BUFFERS = ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']


def ema_name(k):
    return 'ema_' + k.replace('.', '_')


def bits(t):
    return t.dtype, tuple(t.shape), bits_view(t.detach().reshape(-1).contiguous()).tolist()


def mmcv_final(runner):
    """(raw, ema, buffers) of a finished mmcv epoch run: after the last after_train_epoch swap
    the parameters hold the EMA and the ema_* buffers the raw weights
    (docs/runner-behaviour.md#mmcv-emahook)."""
    sd = runner.model.state_dict()
    return ({k: sd[ema_name(k)] for k in PARAMS}, {k: sd[k] for k in PARAMS},
            {k: sd[k] for k in BUFFERS})


def engine_final(runner):
    """(raw, ema, buffers) of a finished mmengine run: the model holds raw weights
    (docs/runner-behaviour.md#mmengine-emahook)."""
    sd = runner.model.state_dict()
    ema = ema_hook_of(runner).ema_model.module.state_dict()
    return {k: sd[k] for k in PARAMS}, {k: ema[k] for k in PARAMS}, {k: sd[k] for k in BUFFERS}


def assert_bitwise(a, b, what):
    bad = [k for k in a if bits(a[k]) != bits(b[k])]
    assert not bad, f'{what}: {bad} differ'


@pytest.fixture
def data():
    return make_weights(3, True, seed=0), make_batches(3, seed=1)


@pytest.mark.parametrize('priority', ['NORMAL', 49])
def test_mmcv_to_mmengine_resume(real_runners, data, tmp_path, monkeypatch, priority):
    weights, batches = data
    hook = dict(EMA_MMCV, priority=priority)
    full = run_mmcv(tmp_path / 'full', weights, batches, [hook], max_epochs=2)
    run_mmcv(tmp_path / 'part', weights, batches, [hook], max_epochs=1)
    conv = tmp_path / 'converted.pth'
    res = C.convert(tmp_path / 'part' / 'epoch_1.pth', conv, to='mmengine',
                    source_priority=priority)
    assert any('given hook priority' in e for e in res.evidence)
    raw_ref, ema_ref, buf_ref = mmcv_final(full)

    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')   # plain data: default load works
    seen = {}

    class Probe:
        priority = 'VERY_HIGH'

        def before_train(self, runner):
            seen['start'] = (runner.iter, runner.epoch,
                             int(ema_hook_of(runner).ema_model.steps))

    from mmengine.hooks import Hook
    probe = type('Probe', (Hook,), dict(vars(Probe)))()
    # mmcv numerics kept: the real mmengine EMAHook driving compat_ema's LegacyMMCVEMA
    legacy = run_engine(tmp_path / 'eng_legacy', weights, batches,
                        [dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1),
                         probe], max_epochs=2, load_from=str(conv), resume=True)
    assert seen['start'] == (3, 1, 3)            # resumed at iter 3, epoch 1, steps 3
    assert (legacy.iter, legacy.epoch) == (6, 2)
    raw, ema, buf = engine_final(legacy)
    assert_bitwise(raw_ref, raw, 'raw weights')
    assert_bitwise(buf_ref, buf, 'BN buffers')
    assert_bitwise(ema_ref, ema, 'EMA (LegacyMMCVEMA)')

    # mmengine's own ExponentialMovingAverage: same momentum, lerp_ rounding (documented)
    native = run_engine(tmp_path / 'eng_native', weights, batches,
                        [dict(type='EMAHook', momentum=0.2)], max_epochs=2,
                        load_from=str(conv), resume=True)
    raw, ema, buf = engine_final(native)
    assert_bitwise(raw_ref, raw, 'raw weights')
    for k in PARAMS:
        torch.testing.assert_close(ema[k], ema_ref[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('ema_type', ['LegacyMMCVEMA', 'ExponentialMovingAverage'])
def test_mmengine_to_mmcv_resume(real_runners, data, tmp_path, monkeypatch, ema_type):
    weights, batches = data
    extra = dict(warm_up=1) if ema_type == 'LegacyMMCVEMA' else {}
    hook = dict(type='EMAHook', ema_type=ema_type, momentum=0.2, **extra)
    full = run_engine(tmp_path / 'full', weights, batches, [hook], max_epochs=2)
    run_engine(tmp_path / 'part', weights, batches, [hook], max_epochs=1)
    src = tmp_path / 'part' / 'epoch_1.pth'
    assert C.inspect(src).safe                      # HistoryBuffer read inertly
    conv = tmp_path / 'converted.pth'
    C.convert(src, conv, to='mmcv')
    raw_ref, ema_ref, buf_ref = engine_final(full)

    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    mm = run_mmcv(tmp_path / 'mmcv', make_weights(3, True, seed=7), batches,
                  [dict(EMA_MMCV, resume_from=str(conv))], max_epochs=2)
    assert (mm.iter, mm.epoch) == (6, 2)
    raw, ema, buf = mmcv_final(mm)
    assert_bitwise(raw_ref, raw, 'raw weights')
    assert_bitwise(buf_ref, buf, 'BN buffers')
    if ema_type == 'LegacyMMCVEMA':
        assert_bitwise(ema_ref, ema, 'EMA')
    else:   # epoch 2 runs mmcv's mul_/add_ where the reference ran lerp_: rounding only
        for k in PARAMS:
            torch.testing.assert_close(ema[k], ema_ref[k], rtol=1e-6, atol=1e-7)


def test_mmdet_to_mmengine_resume_keeps_averaged_buffers(real_runners, data, tmp_path,
                                                          monkeypatch):
    """mmdet ExpMomentumEMAHook (skip_buffers=False, priority 49, the YOLOX setup) ->
    mmengine with LegacyExpMomentumEMA: EMA of parameters AND BN statistics continue bitwise."""
    weights, batches = data
    hook = dict(type='ExpMomentumEMAHook', momentum=0.2, total_iter=5, priority=49)
    full = run_mmcv(tmp_path / 'full', weights, batches, [hook], max_epochs=2)
    run_mmcv(tmp_path / 'part', weights, batches, [hook], max_epochs=1)
    conv = tmp_path / 'converted.pth'
    res = C.convert(tmp_path / 'part' / 'epoch_1.pth', conv, to='mmengine')
    assert any('stale integer copy' in e for e in res.evidence)   # side detected, not assumed
    sd = full.model.state_dict()
    float_keys = PARAMS + ['bn.running_mean', 'bn.running_var']
    # priority 49: after training the model holds EMA, ema_* the raw values (swap,
    # docs/runner-behaviour.md#mmdet-swap)
    ema_ref = {k: sd[k] for k in float_keys}
    raw_ref = {k: sd[ema_name(k)] for k in float_keys}

    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    eng = run_engine(tmp_path / 'eng', weights, batches,
                     [dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.2,
                           total_iter=5, update_buffers=True)],
                     max_epochs=2, load_from=str(conv), resume=True)
    msd = eng.model.state_dict()
    esd = ema_hook_of(eng).ema_model.module.state_dict()
    assert_bitwise(raw_ref, {k: msd[k] for k in float_keys}, 'raw weights and BN statistics')
    assert_bitwise(ema_ref, {k: esd[k] for k in float_keys}, 'EMA of weights and BN statistics')


def test_mmcv_iter_runner_to_mmengine_iter_loop(real_runners, data, tmp_path, monkeypatch):
    """IterBasedRunner ``iter_2.pth`` (meta iter 1 = done - 1), EMA hook at priority 49 (before
    CheckpointHook) -> mmengine IterBasedTrainLoop at iter 2 (it skips the 2 used batches): raw
    and EMA continue bitwise (LegacyMMCVEMA)."""
    weights, batches = data
    hook = dict(EMA_MMCV, priority=49)
    full = run_mmcv(tmp_path / 'full', weights, batches, [hook], by_epoch=False, max_iters=4)
    run_mmcv(tmp_path / 'part', weights, batches, [hook], by_epoch=False, max_iters=2,
             ckpt_interval=2)
    src = tmp_path / 'part' / 'iter_2.pth'
    assert torch.load(src, weights_only=True)['meta']['iter'] == 1
    conv = tmp_path / 'converted.pth'
    res = C.convert(src, conv, to='mmengine')
    assert any("file name 'iter_2.pth'" in e for e in res.evidence)
    ck = torch.load(conv, weights_only=True)
    assert (ck['meta']['epoch'], ck['meta']['iter'], int(ck['ema_state_dict']['steps'])) == \
        (0, 2, 2)
    sd = full.model.state_dict()      # IterBasedRunner never swaps: params raw, ema_* EMA
    raw_ref = {k: sd[k] for k in PARAMS}
    ema_ref = {k: sd[ema_name(k)] for k in PARAMS}
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    eng = run_engine(tmp_path / 'eng', weights, batches,
                     [dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1)],
                     by_epoch=False, max_iters=4, load_from=str(conv), resume=True,
                     ckpt=dict(type='CheckpointHook', interval=10, by_epoch=False))
    assert eng.iter == 4
    raw, ema, _ = engine_final(eng)
    assert_bitwise(raw_ref, raw, 'raw weights')
    assert_bitwise(ema_ref, ema, 'EMA (LegacyMMCVEMA)')


def test_mmcv_iter_runner_normal_priority_ema_lags_one_update(real_runners, data, tmp_path):
    """The documented difference: under IterBasedRunner a NORMAL EMA hook runs after
    CheckpointHook in after_train_iter, so ``iter_N.pth`` holds the EMA of N-1 updates next to
    the raw weights of N steps. The saved EMA equals what a priority-49 hook saved one
    iteration earlier; no converter can recreate the missing update."""
    weights, batches = data
    run_mmcv(tmp_path / 'normal', weights, batches, [EMA_MMCV], by_epoch=False, max_iters=2)
    run_mmcv(tmp_path / 'p49', weights, batches, [dict(EMA_MMCV, priority=49)],
             by_epoch=False, max_iters=2)
    normal2 = torch.load(tmp_path / 'normal' / 'iter_2.pth', weights_only=True)['state_dict']
    p49_1 = torch.load(tmp_path / 'p49' / 'iter_1.pth', weights_only=True)['state_dict']
    p49_2 = torch.load(tmp_path / 'p49' / 'iter_2.pth', weights_only=True)['state_dict']
    assert_bitwise({k: p49_1[ema_name(k)] for k in PARAMS},
                   {k: normal2[ema_name(k)] for k in PARAMS}, 'lagging EMA')
    assert_bitwise({k: p49_2[k] for k in PARAMS}, {k: normal2[k] for k in PARAMS}, 'raw')
    rep = C.inspect(tmp_path / 'normal' / 'iter_2.pth')
    assert any('one update behind' in n for n in rep.notes)


def test_mmengine_to_mmdet_resume(real_runners, data, tmp_path, monkeypatch):
    """mmengine + LegacyExpMomentumEMA(update_buffers=True) -> mmdet 2.x layout (skip_buffers
    detected False), resumed by the real ExpMomentumEMAHook(resume_from=...): weights, BN
    statistics and their EMA continue bitwise."""
    weights, batches = data
    hook = dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.2, total_iter=5,
                update_buffers=True)
    full = run_engine(tmp_path / 'full', weights, batches, [hook], max_epochs=2)
    run_engine(tmp_path / 'part', weights, batches, [hook], max_epochs=1)
    conv = tmp_path / 'converted.pth'
    res = C.convert(tmp_path / 'part' / 'epoch_1.pth', conv, to='mmdet')
    assert any('skip_buffers=False' in e for e in res.evidence)
    float_keys = PARAMS + ['bn.running_mean', 'bn.running_var']
    msd = full.model.state_dict()
    esd = ema_hook_of(full).ema_model.module.state_dict()
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    mm = run_mmcv(tmp_path / 'mmdet', make_weights(3, True, seed=7), batches,
                  [dict(type='ExpMomentumEMAHook', momentum=0.2, total_iter=5,
                        resume_from=str(conv), priority=49)], max_epochs=2)
    assert (mm.iter, mm.epoch) == (6, 2)
    sd = mm.model.state_dict()        # after the last swap: model = EMA, ema_* = raw
    assert_bitwise({k: msd[k] for k in float_keys}, {k: sd[ema_name(k)] for k in float_keys},
                   'raw weights and BN statistics')
    assert_bitwise({k: esd[k] for k in float_keys}, {k: sd[k] for k in float_keys},
                   'EMA of weights and BN statistics')


def _strip_hub(ck):
    return {k: v for k, v in ck.items() if k != 'message_hub'}


def _same(a, b, where=''):
    if isinstance(a, torch.Tensor):
        assert bits(a) == bits(b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def test_safe_load_matches_full_unpickle_of_real_files(real_runners):
    """compat_ema's restricted load of every real reference file equals a full torch.load with
    the real mmengine importable, except that HistoryBuffer objects are inert placeholders
    holding the same pickled state."""
    from pathlib import Path
    ref = Path(__file__).resolve().parents[2] / 'reference' / 'checkpoints'
    for f in sorted(ref.glob('*.pth')):
        ours = C.load(f)
        real = torch.load(f, map_location='cpu', weights_only=False)
        _same(_strip_hub(real), _strip_hub(ours), f.name)
        if 'message_hub' in real:
            hub, mine = real['message_hub'], ours['message_hub']
            assert list(hub['log_scalars']) == list(mine['log_scalars'])
            for name, buf in hub['log_scalars'].items():
                state = mine['log_scalars'][name].state
                assert state['max_length'] == buf.max_length
                assert state['_log_history'].state[1] == tuple(buf._log_history.shape)
            assert hub['runtime_info'].keys() == mine['runtime_info'].keys()
