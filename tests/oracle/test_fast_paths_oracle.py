"""The fast path (foreach updates, cached plans, storage-exchange swaps, the flat buffer of
small ``ema_*`` destinations) against the REAL upstream.

Mode ``exchange``: every tensor is allowed to take the exchange path
(``EXCHANGE_MIN_NUMEL = 1``, no flat buffer), so the storage exchange, the alias re-pointing (mmdet's state_dict aliases,
mmengine's ``avg_parameters`` with ``update_buffers=True``) and the cached
plans all run; after every hook call the model's state dict (parameters,
buffers, ``ema_*``) and the averaged model's state (``steps`` included) must
equal upstream's bit for bit. Mode ``flat``: the default thresholds, so every
small ``ema_*`` buffer of mmcv/mmdet goes into the flat buffer (one ``mul_``,
gathered ``add_``, batched swaps). The model has tied weights, BatchNorm buffers
and a convolution, and an SGD optimizer with momentum steps it between calls.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import upstream  # noqa: E402
from test_kernels import Net, drive  # noqa: E402  (the fast-vs-faithful driver)

from compat_ema.core import flat as flat_mod, kernels, swap  # noqa: E402


def _cases():
    return {
        'mmcv': (lambda R, D, E: R.EMAHook(momentum=0.1, warm_up=3), 'mmcv', 'EMAHook',
                 dict(momentum=0.1, warm_up=3), False),
        'mmdet-exp': (lambda R, D, E: D.ExpMomentumEMAHook(momentum=0.01, total_iter=5), 'mmdet',
                      'ExpMomentumEMAHook', dict(momentum=0.01, total_iter=5), False),
        'mmdet-lin-skip': (lambda R, D, E: D.LinearMomentumEMAHook(
            momentum=0.3, interval=2, warm_up=3, skip_buffers=True), 'mmdet', 'LinearMomentumEMAHook',
            dict(momentum=0.3, interval=2, warm_up=3, skip_buffers=True), False),
        'mmengine': (lambda R, D, E: E.EMAHook(momentum=0.3), 'mmengine', 'EMAHook',
                     dict(momentum=0.3), True),
        'mmengine-ub': (lambda R, D, E: E.EMAHook(momentum=0.3, update_buffers=True, interval=2),
                        'mmengine', 'EMAHook', dict(momentum=0.3, update_buffers=True, interval=2), True),
        'mmengine-swa': (lambda R, D, E: E.EMAHook(ema_type='StochasticWeightAverage'), 'mmengine',
                         'EMAHook', dict(ema_type='StochasticWeightAverage'), True),
    }


def _compat(gen, name, kwargs):
    if gen == 'mmcv':
        from compat_ema.mmcv import runner
        return lambda: getattr(runner.hooks, name)(**kwargs)
    if gen == 'mmdet':
        from compat_ema.mmdet.core.hook import ema
        return lambda: getattr(ema, name)(**kwargs)
    from compat_ema.mmengine import hooks
    return lambda: getattr(hooks, name)(**kwargs)


@pytest.mark.parametrize('mode', ['exchange', 'flat'])
@pytest.mark.parametrize('case', list(_cases()))
def test_fast_path_with_exchange_matches_real_upstream(case, mode, monkeypatch):
    make_up, gen, name, kwargs, engine = _cases()[case]
    if mode == 'exchange':
        monkeypatch.setattr(swap, 'EXCHANGE_MIN_NUMEL', 1)
        monkeypatch.setattr(flat_mod, 'FLAT_MAX_NUMEL', 1)
    R = upstream.mmcv_hooks()
    D = upstream.mmdet_ema()
    E, _ = upstream.mmengine_mods()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs = drive(lambda: make_up(R, D, E), True, engine)
        ours = drive(_compat(gen, name, kwargs), True, engine)
    assert len(theirs) == len(ours)
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert list(a) == list(b), (case, i)
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f'{case}: call {i}, {k}'


def test_exchange_really_happened_in_the_compat_run(monkeypatch):
    """Guard against a vacuous comparison: with the threshold at 1 the mmcv swap exchanges."""
    from compat_ema.mmcv import EMAHook
    monkeypatch.setattr(swap, 'EXCHANGE_MIN_NUMEL', 1)
    monkeypatch.setattr(flat_mod, 'FLAT_MAX_NUMEL', 1)
    model = Net()
    runner = type('R', (), {'model': model, 'iter': 0})()
    hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    ptrs = model.head.weight.data_ptr(), hook.model_buffers['ema_head_weight'].data_ptr()
    hook.after_train_epoch(runner)
    assert (hook.model_buffers['ema_head_weight'].data_ptr(), model.head.weight.data_ptr()) == ptrs


def test_flat_buffer_really_used_in_the_compat_run():
    """Guard for mode ``flat``: with the default thresholds the mmcv/mmdet ``ema_*`` buffers
    and mmengine's averaged parameters of the test model live in one flat buffer after
    the first update."""
    from compat_ema.mmcv import EMAHook
    from compat_ema.mmdet.core.hook.ema import ExpMomentumEMAHook
    for hook, pairs_of in ((EMAHook(momentum=0.5), lambda h: h._ema_pairs()),
                           (ExpMomentumEMAHook(momentum=0.01), lambda h: h._ema_pairs()[1])):
        model = Net()
        runner = type('R', (), {'model': model, 'iter': 0})()
        hook.before_run(runner)
        hook.after_train_iter(runner)
        flat = pairs_of(hook)._flat
        assert flat is not None and flat.gathers and len(flat.dst) == len(pairs_of(hook).dst)
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage
    model = Net()
    ema = ExponentialMovingAverage(model, momentum=0.3)
    for _ in range(2):
        ema.update_parameters(model)
    pairs = ema.__dict__['_compat_plan']['avg_floating']
    assert pairs._flat is not None and pairs._flat.gathers and len(pairs._flat.dst) == len(pairs.dst)
