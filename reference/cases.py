"""Golden-trajectory cases: tiny models, a fake runner and fixed hook-event streams.

This module needs only torch and the standard library. It is shared by the
generator (``reference/gen_trajectories.py``, oracle env, real upstream hooks)
and the replay test (``tests/test_golden_trajectories.py``, compat_ema hooks):
both build the same model from the same seed, drive *their* hook through the
same event stream with :func:`drive`, and record the same snapshots. The
expected values therefore come only from the real upstream; this file decides
only what happens around the hook.

Portability: model values and the fake optimizer step come from Python's
``random.Random`` (stable across Python versions) converted from float64 to the
model dtype, and the step is a single ``add_`` per tensor, so the *source*
model evolves bit-identically on any torch version and device. Only the EMA
arithmetic itself may round differently elsewhere (see MIGRATION.md,
"Tolerance policy").
"""
from __future__ import annotations

import contextlib
import copy
import random
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

import torch
import torch.nn as nn

SCHEMA = 2  # bump when a change here changes what is recorded


# --------------------------------------------------------------------------- models
class LinearBN(nn.Module):
    """Linear(4, 3) then BatchNorm1d(3): parameters, float buffers and ``num_batches_tracked``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)


class ConvNet(nn.Module):
    """Conv2d(2, 3, 3), BatchNorm2d(3), Linear(3, 2): a small conv net."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)


class Tied(nn.Module):
    """Embedding(5, 3) whose weight is tied to the output projection Linear(3, 5)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.proj = nn.Linear(3, 5)
        self.proj.weight = self.emb.weight


class Frozen(nn.Module):
    """A frozen Linear(4, 3) backbone, a trainable Linear(3, 2) head and a BatchNorm1d(2)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.backbone.requires_grad_(False)


class ExtraBuffers(nn.Module):
    """Linear(3, 2) plus a float buffer, a long buffer and a non-persistent float buffer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer('scale', torch.ones(2))
        self.register_buffer('count', torch.zeros((), dtype=torch.long))
        self.register_buffer('scratch', torch.zeros(2), persistent=False)


MODELS: Dict[str, Callable[[], nn.Module]] = {
    'linear_bn': LinearBN, 'conv_bn': ConvNet, 'tied': Tied, 'frozen': Frozen,
    'extra_buffers': ExtraBuffers,
}
DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DataParallel``, else ``model``."""
    return model.module if isinstance(model, nn.DataParallel) else model


def _tensors(module: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    """Every distinct parameter and buffer (non-persistent included), in module order."""
    seen, out = set(), []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def _uniform(rng: random.Random, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.tensor([rng.uniform(lo, hi) for _ in range(n)], dtype=torch.float64)


@contextlib.contextmanager
def _cuda_hidden():
    """Make ``DataParallel`` keep a CPU module on a machine that has CUDA."""
    with mock.patch('torch.cuda.is_available', return_value=False), \
            mock.patch('torch.cuda.device_count', return_value=0):
        yield


def build_model(name: str, dtype: str = 'float32', wrap: Optional[str] = None,
                seed: int = 0, device: str = 'cpu') -> nn.Module:
    """Build model ``name`` in ``dtype`` with values drawn from ``random.Random(seed)``."""
    model = MODELS[name]().to(DTYPES[dtype])
    rng = random.Random(seed)
    with torch.no_grad():
        for pname, t in _tensors(model):
            if t.dtype.is_floating_point:
                lo, hi = (0.5, 1.5) if pname.endswith('running_var') else (-1.0, 1.0)
                t.copy_(_uniform(rng, t.numel(), lo, hi).reshape(t.shape).to(t.dtype))
            else:
                t.fill_(rng.randrange(0, 5))
    model = model.to(device)
    # the fake optimizer step moves these only, never what a hook registers later (ema_*)
    model._golden_stepped = [n for n, _ in _tensors(model)]
    if wrap == 'dp':
        if device == 'cpu':
            with _cuda_hidden():
                model = nn.DataParallel(model)
        else:
            model = nn.DataParallel(model)
    elif wrap is not None:
        raise ValueError(f'unknown wrap {wrap!r}; known: None, "dp"')
    return model


@torch.no_grad()
def fake_step(model: nn.Module, seed: int, k: int) -> None:
    """The k-th fake optimizer step: add a seeded delta to every trainable parameter and
    float buffer (BN statistics move as in training), and 1 to every integer buffer, of the
    model as built (buffers that hooks register later are left alone)."""
    rng = random.Random(seed * 100003 + k)
    module = unwrap(model)
    stepped = set(module._golden_stepped)
    for name, t in _tensors(module):
        if name not in stepped:
            continue
        if isinstance(t, nn.Parameter) and not t.requires_grad:
            continue
        if t.dtype.is_floating_point:
            t.add_(_uniform(rng, t.numel(), -0.1, 0.1).reshape(t.shape).to(t.dtype).to(t.device))
        else:
            t.add_(1)


# --------------------------------------------------------------------------- streams
def _ev(method: str, **counters) -> Dict[str, Any]:
    return {'op': 'call', 'method': method, **counters}


def stream_mmcv_epoch(epochs: int, iters: int, val: bool = False) -> List[Dict[str, Any]]:
    """mmcv EpochBasedRunner around an EMA hook (docs/runner-behaviour.md#mmcv-epoch-runner):
    swaps at epoch boundaries.

    ``val``: workflow ``[('train', 1), ('val', 1)]``: a validation epoch after each train
    epoch (mmcv's ``before_val_epoch``/``after_val_epoch``, which call ``before_epoch`` /
    ``after_epoch`` in the base Hook; the epoch counter has moved on)."""
    ev, it = [_ev('before_run', iter=0, epoch=0)], 0
    for e in range(epochs):
        ev.append(_ev('before_train_epoch', iter=it, epoch=e))
        for i in range(iters):
            ev.append({'op': 'step'})
            ev.append(_ev('after_train_iter', iter=it, epoch=e, inner_iter=i))
            it += 1
        ev.append(_ev('after_train_epoch', iter=it, epoch=e))
        if val:
            ev += [_ev('before_val_epoch', iter=it, epoch=e + 1),
                   _ev('after_val_epoch', iter=it, epoch=e + 1)]
    ev.append(_ev('after_run', iter=it, epoch=epochs))
    return ev


def stream_mmcv_iter(iters: int) -> List[Dict[str, Any]]:
    """mmcv IterBasedRunner (docs/runner-behaviour.md#mmcv-iter-runner): only
    before_epoch/after_epoch, so no swap ever."""
    ev = [_ev('before_run', iter=0, epoch=0), _ev('before_epoch', iter=0, epoch=0)]
    for i in range(iters):
        ev.append({'op': 'step'})
        ev.append(_ev('after_train_iter', iter=i, epoch=0, inner_iter=0))
    ev += [_ev('after_epoch', iter=iters, epoch=0), _ev('after_run', iter=iters, epoch=0)]
    return ev


def _mmengine_epochs(ev, start_epoch, epochs, iters, val, save_at=()):
    it = start_epoch * iters
    for e in range(start_epoch, epochs):
        ev.append(_ev('before_train_epoch', iter=it, epoch=e))
        for i in range(iters):
            ev.append({'op': 'step'})
            ev.append(_ev('after_train_iter', iter=it, epoch=e, batch_idx=i))
            it += 1
        ev.append(_ev('after_train_epoch', iter=it, epoch=e))
        if e + 1 in save_at:  # CheckpointHook (VERY_LOW) saves after EMAHook's after_train_epoch
            ev.append({'op': 'save', 'iter': it, 'epoch': e})
        if val:
            ev += [_ev('before_val_epoch', iter=it, epoch=e + 1),
                   _ev('after_val_epoch', iter=it, epoch=e + 1)]
    return it


def stream_mmengine_epoch(epochs: int, iters: int, val: bool = True, test: bool = False,
                          save_at: Tuple[int, ...] = ()) -> List[Dict[str, Any]]:
    """mmengine Runner.train() with EpochBasedTrainLoop
    (docs/runner-behaviour.md#mmengine-entry-points, #mmengine-epoch-loop), optional test()."""
    ev = [_ev('before_run', iter=0, epoch=0), _ev('before_train', iter=0, epoch=0)]
    it = _mmengine_epochs(ev, 0, epochs, iters, val, tuple(save_at))
    ev += [_ev('after_train', iter=it, epoch=epochs), _ev('after_run', iter=it, epoch=epochs)]
    if test:
        ev += [_ev('before_test_epoch', iter=it, epoch=epochs),
               _ev('after_test_epoch', iter=it, epoch=epochs)]
    return ev


def stream_mmengine_iter(iters: int, val_interval: int) -> List[Dict[str, Any]]:
    """mmengine IterBasedTrainLoop (docs/runner-behaviour.md#mmengine-iter-loop): batch_idx ==
    iter, epoch stays 0."""
    ev = [_ev('before_run', iter=0, epoch=0), _ev('before_train', iter=0, epoch=0),
          _ev('before_train_epoch', iter=0, epoch=0)]
    for i in range(iters):
        ev.append({'op': 'step'})
        ev.append(_ev('after_train_iter', iter=i, epoch=0, batch_idx=i))
        if (i + 1) % val_interval == 0 or i + 1 == iters:
            ev += [_ev('before_val_epoch', iter=i + 1, epoch=0),
                   _ev('after_val_epoch', iter=i + 1, epoch=0)]
    ev += [_ev('after_train_epoch', iter=iters, epoch=0), _ev('after_train', iter=iters, epoch=0),
           _ev('after_run', iter=iters, epoch=0)]
    return ev


def stream_mmengine_resume(iters: int, resume: bool, keep_ema: bool) -> List[Dict[str, Any]]:
    """Train 2 epochs saving after epoch 1, then restart (before_run), load that checkpoint with
    ``runner._resume=resume`` (without ``ema_state_dict`` unless ``keep_ema``), let the runner
    load ``state_dict`` into the model, and train epoch 2 again
    (docs/runner-behaviour.md#mmengine-resume, #mmengine-emahook)."""
    ev = [_ev('before_run', iter=0, epoch=0), _ev('before_train', iter=0, epoch=0)]
    _mmengine_epochs(ev, 0, 2, iters, val=False, save_at=(1,))
    ev += [_ev('before_run', iter=0, epoch=0),
           {'op': 'load', 'resume': resume, 'keep_ema': keep_ema, 'iter': iters, 'epoch': 1},
           _ev('before_train', iter=iters, epoch=1)]
    it = _mmengine_epochs(ev, 1, 2, iters, val=True)
    ev.append(_ev('after_train', iter=it, epoch=2))
    return ev


STREAMS = {'mmcv_epoch': stream_mmcv_epoch, 'mmcv_iter': stream_mmcv_iter,
           'mmengine_epoch': stream_mmengine_epoch, 'mmengine_iter': stream_mmengine_iter,
           'mmengine_resume': stream_mmengine_resume}


# --------------------------------------------------------------------------- cases
def _case(name, generation, hook, hook_kwargs, stream, model='linear_bn', dtype='float32',
          wrap=None, seed=0, max_iters=None, max_epochs=None):
    return dict(name=name, generation=generation, hook=hook, hook_kwargs=hook_kwargs,
                model=model, dtype=dtype, wrap=wrap, seed=seed, stream=stream,
                max_iters=max_iters, max_epochs=max_epochs, schema=SCHEMA)


def _cases() -> List[Dict[str, Any]]:
    me2x3 = ['mmcv_epoch', {'epochs': 2, 'iters': 3}]
    me3x3 = ['mmcv_epoch', {'epochs': 3, 'iters': 3}]
    ng = ['mmengine_epoch', {'epochs': 2, 'iters': 3, 'val': True}]
    C = []
    # mmcv EMAHook: momentum**interval, warm-up cap, iter % interval gating, params only.
    C += [
        _case('mmcv_warmup_bites', 'mmcv', 'EMAHook', dict(momentum=0.1, warm_up=100), me2x3),
        _case('mmcv_warmup_idle', 'mmcv', 'EMAHook', dict(momentum=0.002, warm_up=100), me2x3,
              model='conv_bn', seed=1),
        _case('mmcv_interval3', 'mmcv', 'EMAHook', dict(momentum=0.5, interval=3, warm_up=2),
              me3x3, seed=2),
        _case('mmcv_interval3_warmup_bites', 'mmcv', 'EMAHook',
              dict(momentum=0.5, interval=3, warm_up=50), me3x3, seed=3),
        _case('mmcv_iter_runner_no_swap', 'mmcv', 'EMAHook', dict(momentum=0.2, warm_up=1),
              ['mmcv_iter', {'iters': 7}], model='conv_bn', seed=4),
        _case('mmcv_tied', 'mmcv', 'EMAHook', dict(momentum=0.3, warm_up=1), me2x3,
              model='tied', seed=5),
        _case('mmcv_frozen', 'mmcv', 'EMAHook', dict(momentum=0.3, warm_up=1), me2x3,
              model='frozen', seed=6),
        _case('mmcv_extra_buffers', 'mmcv', 'EMAHook', dict(momentum=0.3, warm_up=1), me2x3,
              model='extra_buffers', seed=7),
        _case('mmcv_float64', 'mmcv', 'EMAHook', dict(momentum=0.1, warm_up=100), me2x3,
              dtype='float64', seed=8),
        _case('mmcv_bfloat16', 'mmcv', 'EMAHook', dict(momentum=0.3, warm_up=1), me2x3,
              dtype='bfloat16', seed=9),
        _case('mmcv_dataparallel', 'mmcv', 'EMAHook', dict(momentum=0.3, warm_up=1), me2x3,
              wrap='dp', seed=10),
    ]
    # mmdet 2.x: (iter+1) % interval gating, skip_buffers both ways, integers swapped only.
    C += [
        _case('mmdet_base_buffers', 'mmdet', 'BaseEMAHook', dict(momentum=0.2), me2x3, seed=20),
        _case('mmdet_base_skip_buffers', 'mmdet', 'BaseEMAHook',
              dict(momentum=0.2, skip_buffers=True), me2x3, seed=21),
        _case('mmdet_base_interval3', 'mmdet', 'BaseEMAHook', dict(momentum=0.2, interval=3),
              me3x3, model='conv_bn', seed=22),
        _case('mmdet_exp_buffers', 'mmdet', 'ExpMomentumEMAHook',
              dict(momentum=0.01, total_iter=5), me2x3, seed=23),
        # a validation epoch between train epochs: the swaps stay at the train-epoch edges
        _case('mmdet_exp_trainval', 'mmdet', 'ExpMomentumEMAHook',
              dict(momentum=0.01, total_iter=5), ['mmcv_epoch', {'epochs': 2, 'iters': 3,
                                                                 'val': True}], seed=40),
        _case('mmdet_exp_skip_buffers_interval3', 'mmdet', 'ExpMomentumEMAHook',
              dict(momentum=0.01, total_iter=5, interval=3, skip_buffers=True), me3x3, seed=24),
        _case('mmdet_linear_warmup_bites', 'mmdet', 'LinearMomentumEMAHook',
              dict(momentum=0.1, warm_up=100), me2x3, seed=25),
        _case('mmdet_linear_interval3', 'mmdet', 'LinearMomentumEMAHook',
              dict(momentum=0.5, warm_up=2, interval=3), me3x3, model='conv_bn', seed=26),
        _case('mmdet_iter_runner_no_swap', 'mmdet', 'ExpMomentumEMAHook',
              dict(momentum=0.05, total_iter=4, interval=2), ['mmcv_iter', {'iters': 7}],
              seed=27),
        _case('mmdet_tied', 'mmdet', 'BaseEMAHook', dict(momentum=0.3), me2x3, model='tied',
              seed=28),
        _case('mmdet_frozen', 'mmdet', 'BaseEMAHook', dict(momentum=0.3), me2x3,
              model='frozen', seed=29),
        _case('mmdet_extra_buffers', 'mmdet', 'BaseEMAHook', dict(momentum=0.3), me2x3,
              model='extra_buffers', seed=30),
        _case('mmdet_float64', 'mmdet', 'ExpMomentumEMAHook', dict(momentum=0.01, total_iter=5),
              me2x3, dtype='float64', seed=31),
        _case('mmdet_bfloat16', 'mmdet', 'BaseEMAHook', dict(momentum=0.3), me2x3,
              dtype='bfloat16', seed=32),
        _case('mmdet_dataparallel', 'mmdet', 'BaseEMAHook', dict(momentum=0.3), me2x3,
              wrap='dp', seed=33),
    ]
    # mmengine EMAHook + averaged models.
    EMA, ANN, SWA = 'ExponentialMovingAverage', 'MomentumAnnealingEMA', 'StochasticWeightAverage'
    C += [
        _case('mmengine_ema', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3), ng,
              seed=40, max_iters=6, max_epochs=2),
        _case('mmengine_ema_update_buffers', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, update_buffers=True),
              ['mmengine_epoch', {'epochs': 2, 'iters': 3, 'val': True, 'test': True}],
              model='conv_bn', seed=41, max_iters=6, max_epochs=2),
        _case('mmengine_ema_interval3', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, interval=3), ['mmengine_iter',
                                                              {'iters': 8, 'val_interval': 3}],
              seed=42, max_iters=8, max_epochs=1),
        _case('mmengine_ema_begin_iter', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, begin_iter=3), ['mmengine_iter',
                                                               {'iters': 7, 'val_interval': 2}],
              seed=43, max_iters=7, max_epochs=1),
        # interval counts update calls, not iterations: the EMA starts at iteration 3
        # (begin_iter=4, a copy, steps 0 -> 1), then averages when steps % 2 == 0, i.e. at
        # iterations 5 and 7, where iteration-based gating would pick 4 and 6
        _case('mmengine_ema_begin_iter_interval2', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, begin_iter=4, interval=2),
              ['mmengine_iter', {'iters': 8, 'val_interval': 4}], seed=60, max_iters=8,
              max_epochs=1),
        _case('mmengine_ema_begin_epoch', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, begin_epoch=2, update_buffers=True),
              ['mmengine_epoch', {'epochs': 3, 'iters': 3, 'val': True}], seed=44,
              max_iters=9, max_epochs=3),
        _case('mmengine_annealing', 'mmengine', 'EMAHook',
              dict(ema_type=ANN, momentum=0.05, gamma=4, interval=2), ng, model='conv_bn',
              seed=45, max_iters=6, max_epochs=2),
        _case('mmengine_annealing_update_buffers', 'mmengine', 'EMAHook',
              dict(ema_type=ANN, momentum=0.05, gamma=4, update_buffers=True), ng, seed=46,
              max_iters=6, max_epochs=2),
        _case('mmengine_swa', 'mmengine', 'EMAHook', dict(ema_type=SWA), ng, seed=47,
              max_iters=6, max_epochs=2),
        _case('mmengine_swa_interval2_update_buffers', 'mmengine', 'EMAHook',
              dict(ema_type=SWA, interval=2, update_buffers=True), ng, model='conv_bn',
              seed=48, max_iters=6, max_epochs=2),
        _case('mmengine_tied', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3), ng,
              model='tied', seed=49, max_iters=6, max_epochs=2),
        _case('mmengine_frozen_update_buffers', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, update_buffers=True), ng, model='frozen',
              seed=50, max_iters=6, max_epochs=2),
        _case('mmengine_extra_buffers', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3),
              ng, model='extra_buffers', seed=51, max_iters=6, max_epochs=2),
        _case('mmengine_extra_buffers_update_buffers', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, update_buffers=True), ng,
              model='extra_buffers', seed=52, max_iters=6, max_epochs=2),
        _case('mmengine_float64', 'mmengine', 'EMAHook', dict(ema_type=ANN, momentum=0.05,
                                                              gamma=4), ng,
              dtype='float64', seed=53, max_iters=6, max_epochs=2),
        _case('mmengine_bfloat16', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3), ng,
              dtype='bfloat16', seed=54, max_iters=6, max_epochs=2),
        _case('mmengine_dataparallel', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, update_buffers=True), ng, wrap='dp', seed=55,
              max_iters=6, max_epochs=2),
        _case('mmengine_save_checkpoint', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3),
              ['mmengine_epoch', {'epochs': 2, 'iters': 3, 'val': True, 'save_at': [1, 2]}],
              seed=56, max_iters=6, max_epochs=2),
        _case('mmengine_resume', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3),
              ['mmengine_resume', {'iters': 3, 'resume': True, 'keep_ema': True}], seed=57,
              max_iters=6, max_epochs=2),
        _case('mmengine_load_from', 'mmengine', 'EMAHook', dict(ema_type=EMA, momentum=0.3),
              ['mmengine_resume', {'iters': 3, 'resume': False, 'keep_ema': True}], seed=58,
              max_iters=6, max_epochs=2),
        _case('mmengine_resume_without_ema_state', 'mmengine', 'EMAHook',
              dict(ema_type=EMA, momentum=0.3, update_buffers=True),
              ['mmengine_resume', {'iters': 3, 'resume': True, 'keep_ema': False}],
              model='conv_bn', seed=59, max_iters=6, max_epochs=2),
    ]
    return C


CASES: List[Dict[str, Any]] = _cases()
CASES_BY_NAME = {c['name']: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), 'duplicate case names'


# --------------------------------------------------------------------------- driving
class FakeRunner:
    """The attributes the three generations' EMA hooks read
    (docs/runner-behaviour.md#fake-runner-checklist)."""

    def __init__(self, model: nn.Module, max_iters: int, max_epochs: int):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.inner_iter = 0
        self.max_iters = max_iters
        self.max_epochs = max_epochs
        self._resume = False


def _snapshot(runner: FakeRunner, hook, checkpoint: Optional[dict]) -> Dict[str, torch.Tensor]:
    """Clone every tensor the hook can touch: the (unwrapped) model's state dict with
    non-persistent buffers, mmengine's averaged model, and the checkpoint dict in flight."""
    out: Dict[str, torch.Tensor] = {}

    def add(prefix, module):
        sd = module.state_dict()
        for k, v in sd.items():
            out[prefix + k] = v.detach().clone().cpu()
        for k, v in module.named_buffers():
            if k not in sd:
                out[prefix + k] = v.detach().clone().cpu()

    add('model.', unwrap(runner.model))
    ema = getattr(hook, 'ema_model', None)
    if ema is not None:
        add('ema.', ema)
    if checkpoint is not None:
        for part in ('state_dict', 'ema_state_dict'):
            for k, v in checkpoint.get(part, {}).items():
                out[f'ckpt.{part}.{k}'] = v.detach().clone().cpu()
    return out


def _clone_ckpt(ckpt: dict, keep_ema: bool = True) -> dict:
    """What torch.save then torch.load would give back: fresh tensors, same structure."""
    out = {'meta': dict(ckpt['meta'])}
    for part in ('state_dict', 'ema_state_dict'):
        if part in ckpt and (keep_ema or part == 'state_dict'):
            out[part] = {k: v.detach().clone() for k, v in ckpt[part].items()}
    return out


def _call(hook, generation: str, method: str, runner: FakeRunner, ev: dict) -> None:
    fn = getattr(hook, method)
    if generation != 'mmengine':
        fn(runner)
    elif method in ('before_train_iter', 'after_train_iter'):
        fn(runner, batch_idx=ev['batch_idx'], data_batch=None, outputs=None)
    elif method in ('after_val_epoch', 'after_test_epoch'):
        fn(runner, metrics=None)
    else:
        fn(runner)


def drive(case: Dict[str, Any], make_hook: Callable[[Dict[str, Any]], Any],
          device: str = 'cpu') -> Tuple[List[str], List[Dict[str, torch.Tensor]]]:
    """Run ``case``'s event stream on ``make_hook(case)``; return (labels, snapshots).

    One snapshot before any call (label ``init``) and one after every hook call,
    labelled ``'call <index>: <method> (iter=.., epoch=..)'`` (plus one after the
    runner loads a checkpoint's ``state_dict`` into the model).
    """
    model = build_model(case['model'], case['dtype'], case['wrap'], case['seed'], device)
    stream_name, stream_kwargs = case['stream']
    events = STREAMS[stream_name](**stream_kwargs)
    generation = case['generation']
    runner = FakeRunner(model, case['max_iters'] or 0, case['max_epochs'] or 0)
    hook = make_hook(case)
    labels, snaps = ['init'], [_snapshot(runner, hook, None)]
    saved: Optional[dict] = None
    n_calls = n_steps = 0
    for ev in events:
        op = ev['op']
        for k in ('iter', 'epoch', 'inner_iter'):
            if k in ev:
                setattr(runner, k, ev[k])
        if op == 'step':
            fake_step(model, case['seed'], n_steps)
            n_steps += 1
            continue
        if op == 'call':
            _call(hook, generation, ev['method'], runner, ev)
            labels.append(f"call {n_calls}: {ev['method']} (iter={runner.iter}, "
                          f"epoch={runner.epoch})")
            snaps.append(_snapshot(runner, hook, None))
        elif op == 'save':
            ckpt = {'meta': {'epoch': ev['epoch'] + 1, 'iter': ev['iter']},
                    'state_dict': dict(unwrap(model).state_dict())}
            hook.before_save_checkpoint(runner, ckpt)
            labels.append(f'call {n_calls}: before_save_checkpoint (iter={runner.iter}, '
                          f'epoch={runner.epoch})')
            snaps.append(_snapshot(runner, hook, ckpt))
            saved = _clone_ckpt(ckpt)
        elif op == 'load':
            if saved is None:
                raise RuntimeError(f"case {case['name']}: 'load' before any 'save'")
            runner._resume = ev['resume']
            ckpt = _clone_ckpt(saved, keep_ema=ev['keep_ema'])
            hook.after_load_checkpoint(runner, ckpt)
            labels.append(f"call {n_calls}: after_load_checkpoint (runner._resume={ev['resume']}, "
                          f"ema_state_dict={'kept' if ev['keep_ema'] else 'absent'})")
            snaps.append(_snapshot(runner, hook, ckpt))
            unwrap(model).load_state_dict(copy.copy(ckpt['state_dict']), strict=False)
            labels.append(f'call {n_calls}: then the runner loads state_dict into the model')
            snaps.append(_snapshot(runner, hook, None))
        else:  # pragma: no cover - streams are defined above
            raise ValueError(f'unknown event {ev!r}')
        n_calls += 1
    return labels, snaps
