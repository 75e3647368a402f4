"""Helpers to train tiny models with the REAL mmcv 1.6 runners and the REAL mmengine 0.10.7 Runner.

Used by test_real_runners.py (runner-level differential suite) and test_legacy_bridge.py.
Patches only what docs/runner-behaviour.md#oracle-environment names: ``time.sleep`` in the runner
modules, and sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in this process (mmengine 0.10.7 cannot load its own
checkpoints under torch 2.13 otherwise).
"""
from __future__ import annotations

import inspect
import itertools
import logging
import os
import random
import time
import types
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

import upstream

QUIET = logging.getLogger('compat_ema.oracle.quiet')
QUIET.setLevel(logging.ERROR)
QUIET.propagate = False
_COUNTER = itertools.count()


def prepare(monkeypatch):
    """Import the real runners; patch time.sleep in their modules; allow mmengine resume.

    ``monkeypatch`` is pytest's fixture (or a ``_pytest.monkeypatch.MonkeyPatch``); returns the
    previous torch thread count."""
    mmcv_runner = upstream.mmcv_hooks()
    upstream.mmdet_ema()
    import mmcv.runner.epoch_based_runner as ebr
    import mmcv.runner.iter_based_runner as ibr
    import mmengine.runner.loops as loops
    fake_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time)
                                         if not k.startswith('__')})
    fake_time.sleep = lambda *_: None
    for mod in (ebr, ibr, loops):
        monkeypatch.setattr(mod, 'time', fake_time)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; the machine is shared
    for name in ('mmengine', 'mmcv'):
        logging.getLogger(name).setLevel(logging.ERROR)
    _register_upstream_base_hook()
    return threads


@pytest.fixture
def real_runners(monkeypatch, tmp_path):
    """The real runners, ready (see :func:`prepare`), with compat's integrations imported; the
    working directory is ``tmp_path`` (mmengine runs ``git`` in it for its version string)."""
    monkeypatch.chdir(tmp_path)
    threads = prepare(monkeypatch)
    import compat_ema.integrations.mmcv  # noqa: F401
    import compat_ema.integrations.mmengine_plugin  # noqa: F401
    yield upstream.mmcv_hooks()
    torch.set_num_threads(threads)


def _register_upstream_base_hook() -> None:
    """mmdet 2.x does not register BaseEMAHook; name it 'UpstreamBaseEMAHook' (tests only)."""
    from mmcv.runner import HOOKS
    base = upstream.mmdet_ema().BaseEMAHook
    if 'UpstreamBaseEMAHook' not in HOOKS.module_dict:
        HOOKS.register_module(name='UpstreamBaseEMAHook', module=base)


# --- models and data --------------------------------------------------------------------------
def _layers(module: nn.Module, width: int, bn: bool) -> None:
    module.fc1 = nn.Linear(4, width)
    module.bn = nn.BatchNorm1d(width) if bn else nn.Identity()
    module.fc2 = nn.Linear(width, 2)


def _forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.fc2(torch.relu(module.bn(module.fc1(x))))


class MMCVNet(nn.Module):
    """A model for the real mmcv runners: ``train_step`` returns loss/log_vars/num_samples;
    ``val_step`` records the outputs so tests can see which weights were evaluated."""

    def __init__(self, width: int = 3, bn: bool = True):
        super().__init__()
        _layers(self, width, bn)
        self.val_outputs: List[torch.Tensor] = []

    def forward(self, x):
        return _forward(self, x)

    def train_step(self, data_batch, optimizer=None, **kwargs):
        x, y = data_batch
        loss = ((self(x) - y) ** 2).mean()
        return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=len(x))

    def val_step(self, data_batch, optimizer=None, **kwargs):
        x, y = data_batch
        out = self(x)
        self.val_outputs.append(out.detach().clone())
        return dict(log_vars=dict(val=float(out.sum())), num_samples=len(x))


def engine_net_cls():
    """The mmengine ``BaseModel`` twin of :class:`MMCVNet` (same keys, same loss)."""
    from mmengine.model import BaseModel

    class EngineNet(BaseModel):
        def __init__(self, width: int = 3, bn: bool = True, init_cfg=None):
            super().__init__(init_cfg=init_cfg)
            _layers(self, width, bn)

        def forward(self, x, y=None, mode='tensor'):
            out = _forward(self, x)
            if mode == 'loss':
                return dict(loss=((out - y) ** 2).mean())
            return [out]

    return EngineNet


def metric_cls():
    """An mmengine metric recording the model outputs (which weights were evaluated)."""
    from mmengine.evaluator import BaseMetric

    class OutputMetric(BaseMetric):
        def __init__(self):
            super().__init__(prefix='out')
            self.seen: List[torch.Tensor] = []

        def process(self, data_batch, data_samples):
            for out in data_samples:
                self.seen.append(out.detach().clone())
                self.results.append(float(out.sum()))

        def compute_metrics(self, results):
            return dict(out_sum=sum(results))

    return OutputMetric


def make_weights(width: int, bn: bool, seed: int) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return MMCVNet(width, bn).state_dict()


def make_batches(n: int, seed: int, batch: int = 4) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 4, generator=g), torch.randn(batch, 2, generator=g))
            for _ in range(n)]


def _first(items):
    return items[0]


def loader(batches) -> DataLoader:
    """A DataLoader yielding the given batches as they are (with a sampler and a batch sampler,
    as mmcv's IterLoader and mmengine's DistSamplerSeedHook need)."""
    return DataLoader(batches, batch_size=1, shuffle=False, collate_fn=_first)


# --- the real mmcv runners -------------------------------------------------------------------
def run_mmcv(work_dir: Path, weights, batches, hook_cfgs: Sequence[dict], *, by_epoch: bool = True,
             max_epochs: int = 2, max_iters: int = 6, workflow=(('train', 1),),
             val_batches=None, ckpt_interval: int = 1, resume: Optional[str] = None,
             width: int = 3, bn: bool = True, probes: Sequence[Any] = (), wrap: bool = False,
             meta: Optional[dict] = None):
    """Train an :class:`MMCVNet` with a real mmcv runner; hooks named in ``custom_hooks``;
    ``wrap`` puts the model in mmcv's ``MMDataParallel`` (CPU mode); ``meta`` is the runner's
    meta (saved in every checkpoint; mmdet's ``train_detector`` puts the config text there)."""
    import mmcv.runner as mr
    model = MMCVNet(width, bn)
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if wrap:
        from mmcv.parallel import MMDataParallel
        model = MMDataParallel(model)
    work_dir.mkdir(parents=True, exist_ok=True)
    if by_epoch:
        runner = mr.EpochBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir),
                                     logger=QUIET, max_epochs=max_epochs, meta=meta)
    else:
        runner = mr.IterBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir),
                                    logger=QUIET, max_iters=max_iters)
    runner.register_training_hooks(
        lr_config=None, optimizer_config=dict(grad_clip=None),
        checkpoint_config=dict(interval=ckpt_interval), log_config=None,
        custom_hooks_config=[dict(c) if isinstance(c, dict) else c for c in hook_cfgs])
    for probe, priority in probes:
        runner.register_hook(probe, priority=priority)
    if resume is not None:
        runner.resume(resume, map_location='cpu')
    loaders = [loader(batches)]
    if len(workflow) > 1:
        loaders.append(loader(val_batches))
    runner.run(loaders, list(workflow))
    return runner


# --- the real mmengine Runner ----------------------------------------------------------------
def run_engine(work_dir: Path, weights, batches, custom_hooks: Sequence[Any], *,
               by_epoch: bool = True, max_epochs: int = 2, max_iters: int = 6,
               val_batches=None, val_interval: int = 1, ckpt: Optional[dict] = None,
               load_from: Optional[str] = None, resume: bool = False, width: int = 3,
               bn: bool = True, train: bool = True, test_batches=None, then_test: bool = False,
               manual_resume: Optional[str] = None, init_cfg=None):
    """Train (and/or test) an mmengine ``BaseModel`` twin with the real Runner."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner
    model = engine_net_cls()(width, bn, init_cfg=init_cfg)
    model.load_state_dict(weights)
    work_dir.mkdir(parents=True, exist_ok=True)
    metric = metric_cls()()
    kwargs: Dict[str, Any] = {}
    if train:
        kwargs['train_dataloader'] = loader(batches)
        kwargs['train_cfg'] = (dict(by_epoch=True, max_epochs=max_epochs, val_interval=val_interval)
                               if by_epoch else
                               dict(type='IterBasedTrainLoop', max_iters=max_iters,
                                    val_interval=val_interval))
        kwargs['optim_wrapper'] = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
    if val_batches is not None:
        kwargs.update(val_dataloader=loader(val_batches), val_cfg=dict(),
                      val_evaluator=Evaluator([metric]))
    if test_batches is not None:
        kwargs.update(test_dataloader=loader(test_batches), test_cfg=dict(),
                      test_evaluator=Evaluator([metric]))
    ckpt = dict(type='CheckpointHook', interval=1, by_epoch=by_epoch) if ckpt is None else ckpt
    runner = Runner(
        model=model, work_dir=str(work_dir), default_scope='mmengine',
        default_hooks=dict(checkpoint=ckpt, logger=dict(type='LoggerHook', interval=10 ** 6)),
        custom_hooks=list(custom_hooks), load_from=load_from, resume=resume,
        randomness=dict(seed=0), log_level='ERROR',
        experiment_name=f'compat_{os.getpid()}_{next(_COUNTER)}_{uuid.uuid4().hex[:6]}',
        **kwargs)
    runner.metric = metric
    # by hand on a resume=False runner (docs/runner-behaviour.md#mmengine-emahook gotcha);
    if manual_resume is not None:
        runner.call_hook('before_run')  # the EMA hook needs its model before a checkpoint loads
        runner.resume(manual_resume)
    if train:
        runner.train()
        if then_test:
            runner.test()
    else:
        runner.test()
    return runner


def ema_hook_of(runner):
    """The EMA hook in a runner's hook list (an object with ``ema_model`` or ``param_ema_buffer``)."""
    for hook in runner.hooks:
        if hasattr(hook, 'ema_cfg') or hasattr(hook, 'momentum'):
            return hook
    raise LookupError('no EMA hook registered')


# --- comparing --------------------------------------------------------------------------------
#: torch.load(weights_only=False) where the keyword exists (torch >= 1.13): a full read of
#: the real upstream's own files
FULL_LOAD = {'weights_only': False} if 'weights_only' in inspect.signature(torch.load).parameters else {}


def load(path: Path) -> dict:
    return torch.load(str(path), map_location='cpu', **FULL_LOAD)


def checkpoint_files(work_dir: Path) -> List[str]:
    return sorted(p.name for p in work_dir.iterdir() if p.suffix == '.pth' and not p.is_symlink())


def _bits(t: torch.Tensor) -> torch.Tensor:
    from compat_ema.core.torch_features import bits_view   # torch 1.8-1.10: no view(uint8)
    return bits_view(t.detach().reshape(-1).contiguous())


def _same_tensor(a, b) -> bool:
    """Bitwise equality (dtype, shape and bytes), so -0.0 != 0.0 and NaN == the same NaN."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(_bits(a), _bits(b))


def diff(a: Any, b: Any, where: str = '', skip: Sequence[str] = ()) -> List[str]:
    """Every difference between two nested checkpoint structures (tensors bitwise, key order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        ka = [k for k in a if f'{where}.{k}' not in skip]
        kb = [k for k in b if f'{where}.{k}' not in skip]
        if ka != kb:
            return [f'{where}: keys {ka} != {kb}']
        for k in ka:
            out += diff(a[k], b[k], f'{where}.{k}', skip)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b) or type(a) is not type(b):
            return [f'{where}: {type(a).__name__}[{len(a)}] != {type(b).__name__}[{len(b)}]']
        return list(itertools.chain.from_iterable(diff(x, y, f'{where}[{i}]', skip)
                                                  for i, (x, y) in enumerate(zip(a, b))))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if _same_tensor(a, b):
            return []
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape:
            err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            return [f'{where}: tensors differ (max abs {err:.3g})']
        return [f'{where}: {a!r} != {b!r}']
    if a != b and not (a != a and b != b):  # NaN == NaN for this purpose
        return [f'{where}: {a!r} != {b!r}']
    return []


MMCV_SKIP = ('.meta.time',)
# mmengine appends `git rev-parse HEAD` of the working directory to meta.mmengine_version
ENGINE_SKIP = ('.meta.time', '.meta.experiment_name', '.meta.mmengine_version', '.message_hub')


def compare_work_dirs(dir_a: Path, dir_b: Path, skip: Sequence[str]) -> List[str]:
    """Compare every checkpoint file of two work dirs (same names, same contents)."""
    files_a, files_b = checkpoint_files(dir_a), checkpoint_files(dir_b)
    if files_a != files_b:
        return [f'checkpoint files {files_a} != {files_b}']
    out = []
    for name in files_a:
        out += [f'{name}{d}' for d in diff(load(dir_a / name), load(dir_b / name), '', skip)]
    return out


def rand_choice(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]
