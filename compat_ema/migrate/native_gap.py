"""Measure the EMA gap between a legacy mmdet 2.x ``ExpMomentumEMAHook`` run and its native targets.

No upstream counterpart: upstream has no equivalence check between mmdet 2.x
``ExpMomentumEMAHook`` and mmdet 3.x / mmyolo ``ExpMomentumEMA``. This module
trains one small model once (SGD on a noisy regression; BatchNorm included),
records the raw state after every iteration, and replays that same trajectory
through compat_ema's faithful hooks:

* the legacy run: :class:`compat_ema.mmdet.ExpMomentumEMAHook` (``momentum``,
  ``total_iter``, ``skip_buffers=False``) on an epoch-based schedule (swaps at
  epoch boundaries, momentum from ``runner.iter``);
* native runs: :class:`compat_ema.mmengine.EMAHook` with
  ``ema_type='mmdet3.ExpMomentumEMA'`` or ``'mmyolo.ExpMomentumEMA'`` (momentum
  from the averaged model's ``steps``), as migrated, or migrated carelessly
  (``update_buffers`` left at its default, ``total_iter`` not renamed to
  ``gamma``), and restarted half-way with ``load_from`` or resumed from a legacy
  checkpoint converted by :mod:`compat_ema.checkpoint`.

The gap at an iteration is the largest absolute difference between the legacy
EMA and the native EMA over the parameters (``params``) and over the
floating-point buffers (``buffers``: BN running stats). ``ema_effect`` is the
largest difference between the legacy EMA and the raw weights: the size of the
smoothing itself, for scale. ``benchmarks/native_gap.py`` prints the table that
MIGRATION.md quotes; ``tests/test_native_gap.py`` pins it.
"""
from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['GapNet', 'GapRow', 'GapReport', 'training_trajectory', 'run_legacy', 'run_native',
           'convert_legacy_checkpoint', 'run_converted', 'native_gap', 'format_table']

State = Dict[str, torch.Tensor]


class GapNet(nn.Module):
    """Linear(8, 16) -> BatchNorm1d(16) -> ReLU -> Linear(16, 4): a detector head in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def training_trajectory(n_iters: int, seed: int = 0, lr: float = 0.05) -> Tuple[State, List[State]]:
    """Train :class:`GapNet` with SGD (momentum 0.9) for ``n_iters``; ``(initial, per-iter states)``."""
    if n_iters < 1:
        raise ValueError(f'n_iters must be >= 1, got {n_iters}')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, teacher = GapNet(), nn.Linear(8, 4)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = []
    model.train()
    for _ in range(n_iters):
        x = torch.randn(16, 8, generator=g)
        with torch.no_grad():
            y = teacher(x) + 0.3 * torch.randn(16, 4, generator=g)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return init, states


@torch.no_grad()
def _load(model: nn.Module, state: State) -> None:
    own = model.state_dict()
    for k, v in state.items():
        own[k].copy_(v)


def _runner(model: nn.Module, n_iters: int):
    from ..core.runner import SimpleRunner
    return SimpleRunner(model, max_iters=n_iters)


def run_legacy(init: State, states: Sequence[State], snap_at: Sequence[int], epoch_len: int = 100,
               momentum: float = 0.0001, total_iter: int = 2000, interval: int = 1,
               skip_buffers: bool = False, stop_at: Optional[int] = None,
               checkpoint: Optional[Path] = None) -> Dict[int, State]:
    """The legacy mmdet 2.x run: EMA state (model keys) after the update of each iteration in ``snap_at``.

    With ``stop_at`` (a multiple of ``epoch_len``) the run ends after that many
    iterations; with ``checkpoint`` an mmcv 1.6 checkpoint is written at the
    end, after the epoch-end swap, as a YOLOX config (priority 49, before
    CheckpointHook) leaves it: EMA in the model keys, raw weights in ``ema_*``.
    """
    from ..mmdet import ExpMomentumEMAHook
    model = GapNet()
    _load(model, init)
    hook = ExpMomentumEMAHook(momentum=momentum, total_iter=total_iter, interval=interval,
                              skip_buffers=skip_buffers)
    runner = _runner(model, len(states))
    hook.before_run(runner)
    out: Dict[int, State] = {}
    end = len(states) if stop_at is None else stop_at
    for i in range(end):
        if i % epoch_len == 0:
            runner.epoch = i // epoch_len
            hook.before_train_epoch(runner)
        _load(model, states[i])
        runner.iter = i
        hook.after_train_iter(runner)
        if i in snap_at:
            out[i] = {k: hook.model_buffers[hook.param_ema_buffer[k]].detach().clone()
                      for k in hook.model_parameters}
        if (i + 1) % epoch_len == 0:
            hook.after_train_epoch(runner)
    if checkpoint is not None:
        if end % epoch_len:
            raise ValueError(f'stop_at={end} is not at an epoch boundary (epoch_len={epoch_len})')
        from ..mmcv.runner.checkpoint import save_checkpoint
        save_checkpoint(model, str(checkpoint), meta={'epoch': end // epoch_len, 'iter': end})
    return out


def _native_hook(ema_type: str, kw: dict):
    from ..mmengine.hooks import EMAHook
    return EMAHook(ema_type=ema_type, **kw)


def _continue_native(hook, runner, model, states, start: int, snap_at, out) -> None:
    for i in range(start, len(states)):
        _load(model, states[i])
        runner.iter = i
        hook.after_train_iter(runner, i)
        if i in snap_at:
            out[i] = {k: v.detach().clone() for k, v in hook.ema_model.module.state_dict().items()}


def run_native(init: State, states: Sequence[State], snap_at: Sequence[int], ema_type: str,
               restart: Optional[str] = None, restart_at: int = 0, **kw) -> Dict[int, State]:
    """A native run under compat's mmengine ``EMAHook`` (``ema_type``, ``kw``); EMA state per snap.

    ``restart='load_from'`` or ``'resume'``: after ``restart_at`` iterations
    the run saves an mmengine checkpoint, builds a new model and hook and loads
    it back, as the runner does for ``load_from`` (EMA rebuilt, ``steps`` 0) or
    ``resume=True`` (``ema_state_dict`` restored).
    """
    model = GapNet()
    _load(model, init)
    hook = _native_hook(ema_type, kw)
    runner = _runner(model, len(states))
    hook.before_run(runner)
    hook.before_train(runner)
    out: Dict[int, State] = {}
    if restart is None:
        _continue_native(hook, runner, model, states, 0, snap_at, out)
        return out
    if restart not in ('load_from', 'resume'):
        raise ValueError(f"restart must be None, 'load_from' or 'resume', got {restart!r}")
    _continue_native(hook, runner, model, states[:restart_at], 0, snap_at, out)
    ck = {'meta': {'iter': restart_at}, 'state_dict': model.state_dict()}
    hook.before_save_checkpoint(runner, ck)
    ck = copy.deepcopy(ck)
    model = GapNet()
    runner = _runner(model, len(states))
    runner._resume = restart == 'resume'
    hook = _native_hook(ema_type, kw)
    hook.before_run(runner)
    hook.after_load_checkpoint(runner, ck)
    model.load_state_dict(ck['state_dict'])
    _continue_native(hook, runner, model, states, restart_at, snap_at, out)
    return out


def convert_legacy_checkpoint(init: State, states: Sequence[State], stop_at: int,
                              epoch_len: int = 100, legacy_kw: Optional[dict] = None,
                              workdir: Optional[Path] = None) -> dict:
    """Legacy run to ``stop_at``, its mmcv checkpoint converted to the mmengine layout, loaded.

    The legacy YOLOX-style run (priority 49: the epoch-end checkpoint holds
    the EMA in the model keys, the raw weights in ``ema_*``) is saved with
    mmcv 1.6's ``save_checkpoint``, converted by
    :func:`compat_ema.checkpoint.convert` (``to='mmengine'``, source priority 49,
    epoch-based) and read back with :func:`compat_ema.checkpoint.load`.
    """
    from .. import checkpoint as ckpt_tools
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src, dst = Path(tmp) / 'epoch_legacy.pth', Path(tmp) / 'epoch_mmengine.pth'
        run_legacy(init, states, (), epoch_len=epoch_len, stop_at=stop_at, checkpoint=src,
                   **dict(legacy_kw or {}))
        ckpt_tools.convert(src, dst, to='mmengine', model_keys=list(GapNet().state_dict()),
                           source_priority=49, by_epoch=True)
        return ckpt_tools.load(dst)


def run_converted(ck: dict, states: Sequence[State], snap_at: Sequence[int], ema_type: str,
                  resume: bool = True, **kw) -> Dict[int, State]:
    """Continue a converted legacy checkpoint (:func:`convert_legacy_checkpoint`) natively.

    ``resume=True``: the runner's ``resume`` (EMA and ``steps`` from
    ``ema_state_dict``, model from the raw weights); ``resume=False``: plain
    ``load_from`` (EMA rebuilt from the EMA weights, ``steps`` 0). Training
    continues from ``meta['iter']``.
    """
    from ..core.state_dict import load_state_dict
    ck = copy.deepcopy(ck)
    model = GapNet()
    runner = _runner(model, len(states))
    runner._resume = resume
    hook = _native_hook(ema_type, kw)
    hook.before_run(runner)
    hook.before_train(runner)
    hook.after_load_checkpoint(runner, ck)
    load_state_dict(model, ck['state_dict'], generation='mmengine')
    out: Dict[int, State] = {}
    _continue_native(hook, runner, model, states, int(ck['meta']['iter']), snap_at, out)
    return out


def _max_gap(a: State, b: State, keys: Sequence[str]) -> float:
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in keys), default=0.0)


@dataclass
class GapRow:
    """One native variant against the legacy run: gaps per reported iteration."""

    name: str
    what: str
    params: Dict[int, float] = field(default_factory=dict)
    buffers: Dict[int, float] = field(default_factory=dict)


@dataclass
class GapReport:
    """All rows, the reported iterations and the size of the EMA effect itself."""

    n_iters: int
    momentum: float
    total_iter: int
    snap_at: List[int]
    ema_effect: Dict[int, float]
    rows: List[GapRow]
    notes: List[str] = field(default_factory=list)

    def row(self, name: str) -> GapRow:
        """The row called ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f'no row {name!r}; rows: {[r.name for r in self.rows]}')


def native_gap(n_iters: int = 3000, momentum: float = 0.0001, total_iter: int = 2000,
               restart_at: int = 1500, epoch_len: int = 100, seed: int = 0,
               snap_at: Optional[Sequence[int]] = None) -> GapReport:
    """Run the legacy YOLOX-style EMA and each native variant on one training; measure the gaps.

    Runs single-threaded (tiny tensors; intra-op threads only contend).
    """
    if not 0 < restart_at < n_iters or restart_at % epoch_len:
        raise ValueError(f'restart_at={restart_at} must be an epoch boundary inside the run '
                         f'(epoch_len={epoch_len}, n_iters={n_iters})')
    if snap_at is None:
        snap_at = sorted({0, 1, 2, 10, 100, restart_at - 1, restart_at, restart_at + 10,
                          restart_at + 100, n_iters - 1} & set(range(n_iters)))
    snap_at = list(snap_at)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return _native_gap(n_iters, momentum, total_iter, restart_at, epoch_len, seed, snap_at)
    finally:
        torch.set_num_threads(threads)


def _native_gap(n_iters, momentum, total_iter, restart_at, epoch_len, seed, snap_at) -> GapReport:
    init, states = training_trajectory(n_iters, seed)
    params = [k for k, _ in GapNet().named_parameters()]
    buffers = [k for k, v in GapNet().named_buffers() if v.is_floating_point()]
    short = max(1, total_iter // 4)
    legacy_kw = dict(momentum=momentum, total_iter=total_iter)
    legacy = run_legacy(init, states, snap_at, epoch_len, **legacy_kw)
    legacy_short = run_legacy(init, states, snap_at, epoch_len, momentum, short)
    yolox = dict(momentum=momentum, gamma=total_iter, update_buffers=True)
    mmdet3 = run_native(init, states, snap_at, 'mmdet3.ExpMomentumEMA', **yolox)
    ck = convert_legacy_checkpoint(init, states, restart_at, epoch_len, legacy_kw)
    variants = [
        ('mmdet3', 'mmdet 3.x, the YOLOX migration (update_buffers=True, gamma=total_iter)',
         mmdet3, legacy),
        ('mmyolo', 'mmyolo, same config (lerp_ instead of mul_/add_)',
         run_native(init, states, snap_at, 'mmyolo.ExpMomentumEMA', **yolox), legacy),
        ('mmdet3_default_buffers', 'mmdet 3.x, update_buffers left at its default (False)',
         run_native(init, states, snap_at, 'mmdet3.ExpMomentumEMA', momentum=momentum,
                    gamma=total_iter), legacy),
        ('mmyolo_default_buffers', 'mmyolo, update_buffers=False (buffers synced once only)',
         run_native(init, states, snap_at, 'mmyolo.ExpMomentumEMA', momentum=momentum,
                    gamma=total_iter), legacy),
        ('mmdet3_gamma_renamed', f'legacy total_iter={short} migrated as gamma={short}',
         run_native(init, states, snap_at, 'mmdet3.ExpMomentumEMA', **dict(yolox, gamma=short)),
         legacy_short),
        ('mmdet3_gamma_not_renamed', f'legacy total_iter={short}, gamma left at {total_iter}',
         mmdet3, legacy_short),
    ]
    for target in ('mmdet3', 'mmyolo'):
        for resume in (True, False):
            mode = 'resume' if resume else 'load_from'
            variants.append((f'converted_{target}_{mode}',
                             f'legacy checkpoint of iter {restart_at} converted to mmengine, '
                             f'{target}, {mode}',
                             run_converted(ck, states, snap_at, f'{target}.ExpMomentumEMA',
                                           resume=resume, **yolox), legacy))
    rows = []
    for name, what, native, reference in variants:
        row = GapRow(name, what)
        for i in snap_at:
            if i in native:
                row.params[i] = _max_gap(reference[i], native[i], params)
                row.buffers[i] = _max_gap(reference[i], native[i], buffers)
        rows.append(row)
    effect = {i: _max_gap(legacy[i], states[i], params) for i in snap_at}
    notes = [f"converted checkpoint: ema_state_dict['steps'] = {int(ck['ema_state_dict']['steps'])},"
             f" meta iter {ck['meta']['iter']}, epoch {ck['meta']['epoch']}"]
    return GapReport(n_iters, momentum, total_iter, snap_at, effect, rows, notes)


def format_table(report: GapReport, kind: str = 'params') -> str:
    """A markdown table: one row per variant, one column per reported iteration."""
    if kind not in ('params', 'buffers'):
        raise ValueError(f"kind must be 'params' or 'buffers', got {kind!r}")
    head = '| variant | ' + ' | '.join(f'it {i}' for i in report.snap_at) + ' |'
    sep = '|---|' + '---|' * len(report.snap_at)
    lines = [head, sep]
    if kind == 'params':
        lines.append('| (EMA effect: legacy EMA vs raw) | ' +
                     ' | '.join(f'{report.ema_effect[i]:.3g}' for i in report.snap_at) + ' |')
    for row in report.rows:
        vals = getattr(row, kind)
        lines.append(f'| {row.name} | ' + ' | '.join(
            (f'{vals[i]:.3g}' if i in vals else '') for i in report.snap_at) + ' |')
    return '\n'.join(lines)
