"""Live differential suite, hook level: the real upstream hooks and compat_ema's, driven by the
same event stream on twin models, compared bitwise after every hook call.

Runs only where the real mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 are installed
(``tox -e oracle``). At least 500 seeded random cases per run (``N_CASES``).
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import random
import warnings
from typing import Any, Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn

import upstream

N_CASES = int(os.environ.get('COMPAT_EMA_DIFF_CASES', '520'))
#: run the twin models on this device (``cuda`` on a GPU machine: the GPU differential run)
DEVICE = torch.device(os.environ.get('COMPAT_EMA_DIFF_DEVICE', 'cpu'))
logging.getLogger('compat_ema').setLevel(logging.ERROR)


# --- models -----------------------------------------------------------------------------------
class LinBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 4)
        self.bn = nn.BatchNorm1d(4)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 6, bias=False)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.emb.weight
        self.bias = nn.Parameter(torch.zeros(6))


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(4, 3)
        self.register_buffer('scale', torch.ones(3))
        self.register_buffer('counter', torch.zeros((), dtype=torch.long))


MODELS = {'linbn': LinBN, 'convbn': ConvBN, 'tied': Tied, 'frozen': Frozen}


def make_model(kind: str, dtype: torch.dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[kind]().to(dtype).to(DEVICE)


def train_step(model: nn.Module, seed: int) -> None:
    """A deterministic stand-in for an optimizer step and a BN forward."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype).to(p.device) * 0.1)
        for name, b in model.named_buffers():
            if name.startswith('ema_'):
                continue
            if b.dtype.is_floating_point:
                b.add_(torch.randn(b.shape, generator=g).to(b.dtype).to(b.device) * 0.05)
            else:
                b.add_(1)


# --- runner -----------------------------------------------------------------------------------
class Runner:
    def __init__(self, model, max_iters, max_epochs, resume=False):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.inner_iter = 0
        self.max_iters = max_iters
        self.max_epochs = max_epochs
        self._max_iters = max_iters
        self._max_epochs = max_epochs
        self._resume = resume

    def resume(self, path):  # pragma: no cover - resume_from is not used in random cases
        raise AssertionError('unexpected resume')


# --- case generation --------------------------------------------------------------------------
def random_case(seed: int) -> Dict[str, Any]:
    rng = random.Random(seed)
    gen = rng.choice(['mmcv', 'mmdet', 'mmdet', 'mmengine', 'mmengine'])
    case: Dict[str, Any] = dict(seed=seed, gen=gen, model=rng.choice(list(MODELS)),
                                dtype=rng.choice([torch.float32, torch.float32, torch.float64,
                                                  torch.bfloat16]),
                                wrap=rng.random() < 0.2, epochs=rng.randint(1, 3),
                                iters=rng.randint(1, 4))
    momentum = rng.choice([1e-4, 2e-4, 0.01, 0.1, 0.3, 0.5, rng.uniform(1e-5, 0.99)])
    interval = rng.choice([1, 1, 2, 3, 4])
    if gen == 'mmcv':
        case['kwargs'] = dict(momentum=momentum, interval=interval,
                              warm_up=rng.choice([1, 3, 100, 5000]))
        case['cls'] = 'EMAHook'
    elif gen == 'mmdet':
        case['cls'] = rng.choice(['BaseEMAHook', 'ExpMomentumEMAHook', 'LinearMomentumEMAHook'])
        kw = dict(momentum=momentum, interval=interval, skip_buffers=rng.random() < 0.5)
        if case['cls'] == 'ExpMomentumEMAHook':
            kw['total_iter'] = rng.choice([2, 10, 2000])
        if case['cls'] == 'LinearMomentumEMAHook':
            kw['warm_up'] = rng.choice([1, 4, 100])
        case['kwargs'] = kw
    else:
        case['cls'] = 'EMAHook'
        ema_type = rng.choice(['ExponentialMovingAverage', 'MomentumAnnealingEMA',
                               'StochasticWeightAverage'])
        kw: Dict[str, Any] = dict(ema_type=ema_type, interval=interval,
                                  update_buffers=rng.random() < 0.5)
        if ema_type != 'StochasticWeightAverage':
            kw['momentum'] = min(momentum, 0.5)
        if ema_type == 'MomentumAnnealingEMA':
            kw['gamma'] = rng.choice([1, 5, 100])
        total = case['epochs'] * case['iters']
        start = rng.random()
        if start < 0.2:
            kw['begin_iter'] = rng.randint(1, total)
        elif start < 0.35:
            kw['begin_epoch'] = rng.randint(1, case['epochs'])
        case['kwargs'] = kw
    return case


def hook_pair(case) -> Tuple[Any, Any]:
    from compat_ema import mmcv as c_mmcv, mmdet as c_mmdet, mmengine as c_mmengine
    kw = case['kwargs']
    if case['gen'] == 'mmcv':
        return upstream.mmcv_hooks().EMAHook(**kw), c_mmcv.EMAHook(**kw)
    if case['gen'] == 'mmdet':
        return getattr(upstream.mmdet_ema(), case['cls'])(**kw), getattr(c_mmdet, case['cls'])(**kw)
    return upstream.mmengine_mods()[0].EMAHook(**kw), c_mmengine.EMAHook(**kw)


# --- comparison -------------------------------------------------------------------------------
def snapshot(model: nn.Module, hook) -> Dict[str, torch.Tensor]:
    inner = model.module if isinstance(model, nn.DataParallel) else model
    snap = {f'model.{k}': v.clone() for k, v in inner.state_dict(keep_vars=False).items()}
    ema_model = getattr(hook, 'ema_model', None)
    if ema_model is not None:
        snap.update({f'ema_model.{k}': v.clone() for k, v in ema_model.state_dict().items()})
    return snap


def assert_same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], where: str) -> None:
    assert list(a) == list(b), f'{where}: keys differ: {list(a)} vs {list(b)}'
    for k in a:
        x, y = a[k], b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, f'{where}: {k} dtype/shape differ'
        if not torch.equal(x, y):
            diff = (x.double() - y.double()).abs()
            idx = int(diff.flatten().argmax())
            raise AssertionError(f'{where}: {k} differs (max abs {float(diff.max()):.3e} '
                                 f'at flat index {idx})')


def run_stream(case, hook, model) -> List[Tuple[str, Dict[str, torch.Tensor]]]:
    """Drive ``hook`` through the event stream of ``case``; snapshot after every call."""
    total = case['epochs'] * case['iters']
    wrapped = nn.DataParallel(model) if case['wrap'] else model
    runner = Runner(wrapped, max_iters=total, max_epochs=case['epochs'])
    out: List[Tuple[str, Dict[str, torch.Tensor]]] = []
    eng = case['gen'] == 'mmengine'

    def call(name, *args, **kwargs):
        getattr(hook, name)(runner, *args, **kwargs)
        out.append((f'{name}@iter{runner.iter}/epoch{runner.epoch}', snapshot(model, hook)))

    call('before_run')
    if eng:
        call('before_train')
    for epoch in range(case['epochs']):
        runner.epoch = epoch
        call('before_train_epoch')
        for i in range(case['iters']):
            runner.iter = epoch * case['iters'] + i
            runner.inner_iter = i
            train_step(model, case['seed'] * 1000 + runner.iter)
            if eng:
                call('after_train_iter', batch_idx=runner.iter, data_batch=None, outputs=None)
            else:
                call('after_train_iter')
        runner.iter += 1
        call('after_train_epoch')
        runner.epoch = epoch + 1
        if eng:
            call('before_val_epoch')
            call('after_val_epoch', metrics={})
    if eng:
        call('before_test_epoch')
        call('after_test_epoch', metrics={})
        ckpt = {'meta': {}, 'state_dict': copy.deepcopy(model.state_dict())}
        hook.before_save_checkpoint(runner, checkpoint=ckpt)
        out.append(('before_save_checkpoint', {f'ckpt.{s}.{k}': v.clone()
                                               for s in ('state_dict', 'ema_state_dict')
                                               for k, v in ckpt[s].items()}))
        for resume in (True, False):
            runner._resume = resume
            loaded = copy.deepcopy(ckpt)
            hook.after_load_checkpoint(runner, checkpoint=loaded)
            out.append((f'after_load_checkpoint(resume={resume})',
                        {**snapshot(model, hook),
                         **{f'loaded.{k}': v.clone() for k, v in loaded['state_dict'].items()}}))
    return out


def _outcome(run: Callable[[], Any]):
    """``(result, None)`` or ``(None, 'RuntimeError: message')``."""
    try:
        return run(), None
    except RuntimeError as exc:
        return None, f'{type(exc).__name__}: {exc}'


@pytest.mark.parametrize('seed', range(N_CASES))
def test_random_case_bitwise(seed):
    case = random_case(seed)
    up_hook, compat_hook = hook_pair(case)
    base = make_model(case['model'], case['dtype'], seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected, up_error = _outcome(lambda: run_stream(case, up_hook, copy.deepcopy(base)))
    with warnings.catch_warnings():
        warnings.simplefilter('error')      # compat must not warn (no deprecated add_ overload)
        got, error = _outcome(lambda: run_stream(case, compat_hook, copy.deepcopy(base)))
    # where the upstream cannot run a case on this torch (mmengine's lerp_ on a dtype whose
    # CPU lerp_ torch 1.8-1.12 lacks), compat_ema raises the same error
    assert error == up_error, f'case {case}'
    if up_error is not None:
        return
    assert [w for w, _ in expected] == [w for w, _ in got]
    for (where, a), (_, b) in zip(expected, got):
        assert_same(a, b, f'case {case}: after {where}')


# --- public surface ---------------------------------------------------------------------------
def _surface_pairs():
    from compat_ema import mmcv as c_mmcv, mmdet as c_mmdet, mmengine as c_mmengine
    R = upstream.mmcv_hooks()
    D = upstream.mmdet_ema()
    EH, EM = upstream.mmengine_mods()
    return [(R.EMAHook, c_mmcv.EMAHook), (D.BaseEMAHook, c_mmdet.BaseEMAHook),
            (D.ExpMomentumEMAHook, c_mmdet.ExpMomentumEMAHook),
            (D.LinearMomentumEMAHook, c_mmdet.LinearMomentumEMAHook),
            (EH.EMAHook, c_mmengine.EMAHook), (EM.BaseAveragedModel, c_mmengine.BaseAveragedModel),
            (EM.ExponentialMovingAverage, c_mmengine.ExponentialMovingAverage),
            (EM.MomentumAnnealingEMA, c_mmengine.MomentumAnnealingEMA),
            (EM.StochasticWeightAverage, c_mmengine.StochasticWeightAverage)]


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_public_surface_signatures():
    for up, compat in _surface_pairs():
        assert _params(up.__init__) == _params(compat.__init__), up.__name__
        methods = [m for m in vars(up) if not m.startswith('__') and callable(getattr(up, m))]
        for name in methods:
            assert hasattr(compat, name), f'{up.__name__}.{name} missing'
            assert [p[0] for p in _params(getattr(up, name))] == \
                [p[0] for p in _params(getattr(compat, name))], f'{up.__name__}.{name}'


@pytest.mark.parametrize('seed', range(12))
def test_attributes_after_before_run(seed):
    case = random_case(seed)
    up_hook, compat_hook = hook_pair(case)
    base = make_model(case['model'], case['dtype'], seed)
    for hook in (up_hook, compat_hook):
        hook.before_run(Runner(copy.deepcopy(base), 10, 2))
    public = {k for k in vars(up_hook) if not k.startswith('__')} - {'momentum_fun'}
    assert public <= set(vars(compat_hook)), public - set(vars(compat_hook))
    for name in ('param_ema_buffer', 'model_parameters', 'model_buffers'):
        if hasattr(up_hook, name):
            assert list(getattr(up_hook, name)) == list(getattr(compat_hook, name))
    if hasattr(up_hook, 'ema_model'):
        assert type(up_hook.ema_model).__name__ == type(compat_hook.ema_model).__name__
        assert list(up_hook.ema_model.avg_parameters) == list(compat_hook.ema_model.avg_parameters)


def test_invalid_arguments_raise_same_exception_types():
    from compat_ema import mmcv as c_mmcv, mmdet as c_mmdet, mmengine as c_mmengine
    R = upstream.mmcv_hooks()
    D = upstream.mmdet_ema()
    EH, EM = upstream.mmengine_mods()
    cases = [(R.EMAHook, c_mmcv.EMAHook, dict(momentum=1.0)),
             (R.EMAHook, c_mmcv.EMAHook, dict(interval=0)),
             (R.EMAHook, c_mmcv.EMAHook, dict(interval=2.0)),
             (D.ExpMomentumEMAHook, c_mmdet.ExpMomentumEMAHook, dict(momentum=0)),
             (EH.EMAHook, c_mmengine.EMAHook, dict(begin_iter=1, begin_epoch=1)),
             (EH.EMAHook, c_mmengine.EMAHook, dict(begin_epoch=-1))]
    for up, compat, kw in cases:
        with pytest.raises(Exception) as e_up:
            up(**kw)
        with pytest.raises(Exception) as e_c:
            compat(**kw)
        assert type(e_up.value) is type(e_c.value), (up.__name__, kw)
