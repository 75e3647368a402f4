"""Write small REAL EMA checkpoints with the real upstream runners (oracle env only).

``main(out_dir)`` trains a tiny model (Linear(4, 3) + BatchNorm1d(3)) with the real
mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 runners and EMA hooks, and keeps the
checkpoints they write. It never imports compat_ema. Next to the files it writes
``manifest.json`` with what the tests need and cannot read from a checkpoint:
the model's key list and parameter key list (to undo mmcv's dot-to-underscore
renaming), the hook settings, the runner kind, and which side of the file holds
the raw weights, *observed* in the run (a recording hook captures the live raw
weights right after the optimizer step of the last iteration, and the file side
equal to them is the raw side).

Workarounds (docs/runner-behaviour.md#oracle-environment): torchvision stub, mmdet ema.py loaded
from its file,
``time.sleep`` patched out of the runner modules, ``map_location='cpu'``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import types
import uuid
from typing import Dict, List

import torch
from torch import nn

SEED = 0
EPOCHS = 2
ITERS_PER_EPOCH = 3
MAX_ITERS = 4


def _stub_torchvision() -> None:
    if 'torchvision' not in sys.modules:
        stub = types.ModuleType('torchvision')
        stub.__version__ = '0.0'
        sys.modules['torchvision'] = stub


def _mmcv_runner():
    _stub_torchvision()
    import mmcv.runner
    import mmcv.runner.epoch_based_runner as ebr
    import mmcv.runner.iter_based_runner as ibr
    for mod in (ebr, ibr):
        _patch_sleep(mod)
    return mmcv.runner


class _NoSleepTime(types.ModuleType):
    """Stands in for ``time`` inside one runner module: ``sleep`` does nothing."""

    def __init__(self):
        super().__init__('time')
        import time
        self.__dict__.update({k: getattr(time, k) for k in dir(time) if not k.startswith('__')})
        self.sleep = lambda *_: None


def _patch_sleep(module) -> None:
    if not isinstance(module.time, _NoSleepTime):
        module.time = _NoSleepTime()


def _mmdet_ema():
    _mmcv_runner()
    if 'mmdet.core.hook.ema' in sys.modules:
        return sys.modules['mmdet.core.hook.ema']
    spec = importlib.util.find_spec('mmdet')
    path = pathlib.Path(spec.submodule_search_locations[0]) / 'core' / 'hook' / 'ema.py'
    mspec = importlib.util.spec_from_file_location('mmdet.core.hook.ema', str(path))
    module = importlib.util.module_from_spec(mspec)
    sys.modules['mmdet.core.hook.ema'] = module
    mspec.loader.exec_module(module)
    return module


class TinyModel(nn.Module):
    """Linear(4, 3) + BatchNorm1d(3); mmcv-style ``train_step``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))

    def train_step(self, data, optimizer=None, **kwargs):
        loss = (self(data) ** 2).mean()
        return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=data.shape[0])

    def val_step(self, data, optimizer=None, **kwargs):
        return self.train_step(data)


def _batches(n: int = ITERS_PER_EPOCH) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return [torch.randn(5, 4, generator=g) for _ in range(n)]


def _first(batch):
    return batch[0]


class _Loader(list):
    sampler = None  # mmcv IterLoader reads loader.sampler when it wraps around


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def _raw_side(sd: Dict[str, torch.Tensor], raw: Dict[str, torch.Tensor], ema_key_of) -> str:
    """'params' or 'ema_keys' or 'both': which file entries equal the captured raw weights."""
    in_params = all(torch.equal(sd[k], v) for k, v in raw.items())
    in_ema = all(ema_key_of(k) in sd and torch.equal(sd[ema_key_of(k)], v) for k, v in raw.items())
    if in_params and in_ema:
        return 'both'
    if in_params:
        return 'params'
    if in_ema:
        return 'ema_keys'
    raise RuntimeError('neither side of the checkpoint holds the captured raw weights')


# --------------------------------------------------------------------------- mmcv / mmdet
def _legacy_run(work: pathlib.Path, hook_cfg: dict, runner_kind: str) -> dict:
    mmcv_runner = _mmcv_runner()
    if hook_cfg['type'] != 'EMAHook':
        _mmdet_ema()
    torch.manual_seed(SEED)
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    logger = logging.getLogger('gen_checkpoints')
    logger.setLevel(logging.ERROR)
    captured: Dict[str, torch.Tensor] = {}

    class Capture(mmcv_runner.Hook):
        def after_train_iter(self, runner):  # after OptimizerHook (40), before EMA (49/50)
            for name, p in runner.model.named_parameters():
                captured[name] = p.detach().clone()
            for name, b in runner.model.named_buffers():
                if not name.startswith('ema_'):
                    captured[name] = b.detach().clone()

    if runner_kind == 'epoch':
        runner = mmcv_runner.EpochBasedRunner(model, optimizer=optimizer, work_dir=str(work),
                                              logger=logger, max_epochs=EPOCHS, meta=dict())
        ckpt_cfg = dict(interval=1)
    else:
        runner = mmcv_runner.IterBasedRunner(model, optimizer=optimizer, work_dir=str(work),
                                             logger=logger, max_iters=MAX_ITERS, meta=dict())
        ckpt_cfg = dict(interval=2, by_epoch=False)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                   checkpoint_config=ckpt_cfg,
                                   custom_hooks_config=[dict(hook_cfg)])
    runner.register_hook(Capture(), priority=45)
    runner.run([_Loader(_batches())], [('train', 1)])
    name = f'epoch_{EPOCHS}.pth' if runner_kind == 'epoch' else f'iter_{MAX_ITERS}.pth'
    return dict(path=work / name, captured=captured, model=model)


def _legacy_cases():
    yield 'mmcv_epoch_normal', 'mmcv', dict(type='EMAHook', momentum=0.2, warm_up=1), 'epoch'
    yield 'mmcv_epoch_p49', 'mmcv', dict(type='EMAHook', momentum=0.2, warm_up=1,
                                         priority=49), 'epoch'
    yield 'mmcv_iter_normal', 'mmcv', dict(type='EMAHook', momentum=0.2, warm_up=1), 'iter'
    for skip in (False, True):
        for prio in ('NORMAL', 49):
            tag = f"mmdet_epoch_{'normal' if prio == 'NORMAL' else 'p49'}_skip{int(skip)}"
            yield tag, 'mmdet', dict(type='ExpMomentumEMAHook', momentum=0.2, total_iter=5,
                                     skip_buffers=skip, priority=prio), 'epoch'


# --------------------------------------------------------------------------- mmengine
def _mmengine_run(work: pathlib.Path, loop: str, with_ema: bool) -> dict:
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    import mmengine.runner.loops as loops
    _patch_sleep(loops)

    captured: Dict[str, torch.Tensor] = {}

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x, mode='loss'):
            out = self.bn(self.fc(x))
            return dict(loss=(out ** 2).mean())

    from mmengine.hooks import Hook

    class Capture(Hook):
        priority = 'NORMAL'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            for name, t in runner.model.state_dict().items():
                captured[name] = t.detach().clone()

    torch.manual_seed(SEED)
    model = Net()
    data = [dict(x=b) for b in _batches()]
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, collate_fn=_first)
    if loop == 'epoch':
        train_cfg = dict(by_epoch=True, max_epochs=EPOCHS)
        ckpt = dict(type='CheckpointHook', interval=1)
        name = f'epoch_{EPOCHS}.pth'
    else:
        train_cfg = dict(by_epoch=False, max_iters=MAX_ITERS)
        ckpt = dict(type='CheckpointHook', interval=2, by_epoch=False)
        name = f'iter_{MAX_ITERS}.pth'
    hooks = [dict(type='EMAHook', momentum=0.2)] if with_ema else []
    runner = Runner(model=model, work_dir=str(work), train_dataloader=loader,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
                    train_cfg=train_cfg,
                    default_hooks=dict(checkpoint=ckpt, logger=None, sampler_seed=None),
                    custom_hooks=hooks + [Capture()], randomness=dict(seed=SEED),
                    default_scope='mmengine', log_level='ERROR',
                    experiment_name=f'gen_{loop}_{int(with_ema)}_{uuid.uuid4().hex[:8]}')
    runner.train()
    logging.getLogger('mmengine').handlers.clear()
    return dict(path=work / name, captured=captured, model=model)


def _record(entry: dict, path: pathlib.Path, generation: str, extra: dict) -> dict:
    ck = torch.load(path, map_location='cpu', **({'weights_only': False} if 'weights_only' in __import__('inspect').signature(torch.load).parameters else {}))
    sd = ck['state_dict']
    captured = entry['captured']
    model = entry['model']
    # the model's own keys: the EMA hooks register ema_* buffers on the live model, so ask a
    # fresh instance of the same class
    fresh = type(model)()
    param_keys = [n for n, _ in fresh.named_parameters()]
    model_keys = list(fresh.state_dict().keys())
    rec = dict(generation=generation, model_keys=model_keys, param_keys=param_keys,
               top_level_keys=list(ck), meta_epoch=ck['meta']['epoch'],
               meta_iter=ck['meta']['iter'], state_dict_keys=list(sd), **extra)
    if generation == 'mmengine':
        ema = ck.get('ema_state_dict')
        if ema is not None:
            raw_in_ema = all(torch.equal(ema['module.' + k], captured[k]) for k in param_keys)
            if not raw_in_ema:
                raise RuntimeError(f'{path}: ema_state_dict does not hold the raw weights')
            rec['raw_side'] = 'ema_state_dict'
            rec['steps'] = int(ema['steps'])
        else:
            rec['raw_side'] = 'state_dict'
            if not all(torch.equal(sd[k], captured[k]) for k in param_keys):
                raise RuntimeError(f'{path}: state_dict does not hold the raw weights')
    else:
        raw = {k: captured[k] for k in param_keys}
        rec['raw_side'] = _raw_side(sd, raw, lambda k: 'ema_' + k.replace('.', '_'))
    rec['digests'] = {k: _digest(v) for k, v in sd.items()}
    return rec


def main(out_dir: pathlib.Path) -> List[pathlib.Path]:
    """Train, save and keep the real checkpoints; return the written paths (manifest last).

    At 1 thread (pinned here): the optimizer state and weights are training numerics, whose last
    bits depend on the thread count and BLAS kernels; ``manifest.json`` records the environment."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _main(pathlib.Path(out_dir))
    finally:
        torch.set_num_threads(threads)


def _main(out_dir: pathlib.Path) -> List[pathlib.Path]:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _format import fingerprint
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: Dict[str, dict] = {}
    written: List[pathlib.Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for tag, gen, cfg, kind in _legacy_cases():
            entry = _legacy_run(tmp / tag, cfg, kind)
            dst = out_dir / f'{tag}.pth'
            shutil.copyfile(entry['path'], dst)
            hook = {k: v for k, v in cfg.items()}
            manifest[dst.name] = _record(entry, dst, gen, dict(
                hook=hook, runner='EpochBasedRunner' if kind == 'epoch' else 'IterBasedRunner',
                priority=cfg.get('priority', 'NORMAL')))
            written.append(dst)
        for tag, loop, with_ema in (('mmengine_epoch_ema', 'epoch', True),
                                    ('mmengine_iter_ema', 'iter', True),
                                    ('mmengine_epoch_noema', 'epoch', False)):
            entry = _mmengine_run(tmp / tag, loop, with_ema)
            dst = out_dir / f'{tag}.pth'
            shutil.copyfile(entry['path'], dst)
            manifest[dst.name] = _record(entry, dst, 'mmengine', dict(
                hook=dict(type='EMAHook', momentum=0.2) if with_ema else None,
                runner='Runner', loop='EpochBasedTrainLoop' if loop == 'epoch'
                else 'IterBasedTrainLoop'))
            written.append(dst)
    man = out_dir / 'manifest.json'
    man.write_text(json.dumps(dict(
        about='Real checkpoints written by the real mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 '
              'runners (reference/gen_checkpoints.py). raw_side: where the raw (non-EMA) weights '
              'are, observed in the run.',
        model='Linear(4, 3) -> BatchNorm1d(3); SGD lr 0.1 momentum 0.9; 3 batches of 5x4 per epoch',
        environment=fingerprint(), files=manifest), indent=1, sort_keys=True) + '\n')
    written.append(man)
    return written


if __name__ == '__main__':
    here = pathlib.Path(__file__).resolve().parent
    for p in main(here / 'checkpoints'):
        print(p, os.path.getsize(p))
