"""Record hook-call traces from the REAL mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 runners.

``main(out_dir) -> list[Path]`` runs every scenario of :data:`SCENARIOS` with the
real runners and hooks (oracle env only; it never imports compat_ema) and writes
``out_dir/<name>.json``: the scenario spec, and for the uninterrupted run
(``full``) and, where the spec has ``resume``, a fresh run resumed from one of
its checkpoints (``resumed``):

* ``hooks``: ``[class name, priority]`` in call order;
* ``trace``: one row per hook call of two recording hooks (HIGHEST 'hi', LOWEST
  'lo'): ``[rec, method, runner.mode, iter, epoch, inner_iter|batch_idx,
  fc.weight[0,0], EMA fc.weight[0,0], bn.num_batches_tracked, EMA nbt,
  bn.running_mean[0], EMA steps, extra]`` (floats as ``float.hex`` without
  trailing zeros; ``extra`` for checkpoint stages: the checkpoint's keys and
  its ``state_dict['fc.weight'][0,0]``);
* ``checkpoints``: per ``*.pth`` file, its keys, meta epoch/iter/last_ckpt and
  sha256 digests of every tensor; ``latest``; ``final``: digests of the final
  model (and mmengine EMA) state; ``error``: the exception that stopped the run.

The harness (``compat_ema.testing.scenario.run_spec``) produces the same record;
``tests/test_harness_traces.py`` compares them. Output is deterministic
(byte-identical on regeneration).

Workarounds (docs/runner-behaviour.md#oracle-environment): a torchvision stub; mmdet's ``ema.py``
loaded from its
file; ``time.sleep`` made a no-op in the runner/loop modules only;
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` so mmengine can load its own checkpoints.
Runs single-threaded (``torch.set_num_threads(1)``): float results of the
BatchNorm forward/backward differ with the intra-op thread count, and one
thread makes the records independent of the machine's core count.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import re
import sys
import tempfile
import time
import types
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

#: torch.load(weights_only=False) on torch >= 1.13; torch 1.8-1.12 have no such keyword
_FULL_LOAD = {'weights_only': False} if 'weights_only' in __import__('inspect').signature(torch.load).parameters else {}

# -- scenarios -------------------------------------------------------------------

MMCV_EMA = dict(type='EMAHook', momentum=0.5, warm_up=4)
EXP = dict(type='ExpMomentumEMAHook', momentum=0.3, total_iter=5)
LIN = dict(type='LinearMomentumEMAHook', momentum=0.5, warm_up=4)
ENG = dict(type='EMAHook', momentum=0.5)


def _h(base: dict, **kw) -> List[dict]:
    cfg = dict(base)
    cfg.update(kw)
    return [cfg]


def _mmcv(name, hooks, runner='epoch', **kw) -> dict:
    spec = dict(name=name, framework='mmcv', runner=runner, hooks=hooks)
    if runner == 'epoch':
        spec.update(max_epochs=2, workflow=[['train', 1], ['val', 1]], checkpoint=1)
    else:
        spec.update(max_iters=5, workflow=[['train', 1]], checkpoint=2)
    spec.update(kw)
    return spec


def _eng(name, hooks, runner='epoch', **kw) -> dict:
    spec = dict(name=name, framework='mmengine', runner=runner, hooks=hooks)
    if runner == 'epoch':
        spec.update(max_epochs=2, checkpoint=None)
    else:
        spec.update(max_iters=5, val_interval=2,
                    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False))
    spec.update(kw)
    return spec


SCENARIOS: List[dict] = [
    # mmcv EpochBasedRunner: workflows, priorities, skip_buffers, intervals
    _mmcv('mmcv_epoch_train_p49', _h(MMCV_EMA, priority=49), workflow=[['train', 1]]),
    _mmcv('mmcv_epoch_trainval_normal', _h(MMCV_EMA)),
    _mmcv('mmcv_epoch_trainval_p49', _h(MMCV_EMA, priority=49)),
    _mmcv('mmdet_epoch_train2val_p49', _h(EXP, priority=49), max_epochs=3,
          workflow=[['train', 2], ['val', 1]]),
    _mmcv('mmdet_epoch_valtrain_p49', _h(EXP, priority=49), max_epochs=1,
          workflow=[['val', 1], ['train', 1]]),
    _mmcv('mmdet_epoch_skip0_normal', _h(EXP, skip_buffers=False)),
    _mmcv('mmdet_epoch_skip0_p49', _h(EXP, skip_buffers=False, priority=49)),
    _mmcv('mmdet_epoch_skip1_normal', _h(EXP, skip_buffers=True)),
    _mmcv('mmdet_epoch_skip1_p49', _h(EXP, skip_buffers=True, priority=49)),
    _mmcv('mmcv_epoch_interval3', _h(MMCV_EMA, interval=3, priority=49), max_epochs=3,
          workflow=[['train', 1]]),
    _mmcv('mmdet_epoch_linear_interval3', _h(LIN, interval=3, priority=49), max_epochs=3,
          workflow=[['train', 1]]),
    _mmcv('mmdet_epoch_ckpt_interval3', _h(EXP, priority=49), max_epochs=4,
          workflow=[['train', 1]], checkpoint=3),
    # mmcv resume matrix (docs/runner-behaviour.md#resume-matrix, #mmcv-emahook)
    *[_mmcv(f'{gen}_epoch_resume_{how}_{tag}', _h(cfg, **({'priority': 49} if tag == 'p49' else {})),
            max_epochs=3, workflow=[['train', 1]], resume=dict(how=how, **{'from': 'epoch_1.pth'}))
      for gen, cfg in (('mmdet', EXP), ('mmcv', MMCV_EMA))
      for tag in ('p49', 'normal') for how in ('hook', 'runner', 'both')],
    _mmcv('mmdet_epoch_resume_load_from_p49', _h(EXP, priority=49), max_epochs=3,
          workflow=[['train', 1]], resume=dict(how='load_from', **{'from': 'epoch_1.pth'})),
    # mmcv IterBasedRunner
    _mmcv('mmcv_iter_train_normal', _h(MMCV_EMA), runner='iter'),
    _mmcv('mmdet_iter_train2val_p49', _h(EXP, priority=49), runner='iter',
          workflow=[['train', 2], ['val', 1]]),
    _mmcv('mmdet_iter_linear_interval3', _h(LIN, interval=3), runner='iter', checkpoint=3),
    _mmcv('mmdet_iter_resume_runner_cpu', _h(EXP, priority=49), runner='iter',
          resume=dict(how='runner', map_location='cpu', **{'from': 'iter_2.pth'})),
    _mmcv('mmdet_iter_resume_runner_default', _h(EXP, priority=49), runner='iter',
          resume=dict(how='runner', **{'from': 'iter_2.pth'})),
    _mmcv('mmdet_iter_resume_hook', _h(EXP, priority=49), runner='iter',
          resume=dict(how='hook', **{'from': 'iter_2.pth'})),
    # mmengine Runner
    _eng('mmengine_epoch_default', _h(ENG)),
    _eng('mmengine_epoch_p49', _h(ENG, priority=49)),
    _eng('mmengine_epoch_update_buffers', _h(ENG, update_buffers=True)),
    _eng('mmengine_epoch_interval3', _h(ENG, interval=3), max_epochs=3),
    _eng('mmengine_epoch_begin_iter3', _h(ENG, begin_iter=3)),
    _eng('mmengine_epoch_begin_epoch2', _h(ENG, begin_epoch=2), max_epochs=3),
    _eng('mmengine_epoch_val_interval2', _h(ENG), max_epochs=3, val_interval=2),
    _eng('mmengine_epoch_val_begin2_interval3', _h(ENG), max_epochs=4, val_interval=3,
         val_begin=2),
    _eng('mmengine_epoch_annealing', _h(ENG, ema_type='MomentumAnnealingEMA', gamma=2)),
    _eng('mmengine_epoch_test_after_train', _h(ENG), test=True),
    _eng('mmengine_iter_ckpt2', _h(ENG), runner='iter'),
    _eng('mmengine_iter_default_ckpt', _h(ENG), runner='iter', checkpoint=None),
    _eng('mmengine_epoch_resume', _h(ENG), max_epochs=3,
         resume=dict(how='resume', **{'from': 'epoch_1.pth'})),
    _eng('mmengine_epoch_resume_auto', _h(ENG, update_buffers=True), max_epochs=3,
         resume=dict(how='auto', **{'from': 'epoch_2.pth'})),
    _eng('mmengine_epoch_load_from', _h(ENG), max_epochs=3,
         resume=dict(how='load_from', **{'from': 'epoch_1.pth'})),
    _eng('mmengine_iter_resume', _h(ENG), runner='iter', resume=dict(how='resume', **{'from': 'iter_2.pth'})),
    _eng('mmengine_test_load', _h(ENG), resume=dict(how='test_load', **{'from': 'epoch_2.pth'})),
]

# -- the model and data (the same arithmetic as compat_ema.testing.models) ---------


class TinyModel(nn.Module):
    """Linear(4, 3) -> BatchNorm1d(3); mmcv-style train_step/val_step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, inputs, targets=None, mode='loss'):
        out = self.bn(self.fc(inputs))
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return [out]

    def train_step(self, data, optimizer=None):
        loss = self(data['inputs'], data['targets'])['loss']
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))

    def val_step(self, data, optimizer=None):
        loss = self(data['inputs'], data['targets'])['loss']
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['inputs']))


def _engine_model():
    from mmengine.model import BaseModel

    class EngineTinyModel(BaseModel):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, inputs, targets=None, mode='loss'):
            out = self.bn(self.fc(inputs))
            if mode == 'loss':
                return dict(loss=((out - targets) ** 2).mean())
            return [out]

    return EngineTinyModel()


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 3, generator=g)
    return DataLoader([dict(inputs=x[i], targets=y[i]) for i in range(n)], batch_size=2,
                      shuffle=False)


# -- upstream loading (docs/runner-behaviour.md#oracle-environment) ------------------

_NO_SLEEP = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith('_')})
_NO_SLEEP.sleep = lambda *_: None


def _upstream():
    if 'torchvision' not in sys.modules:
        stub = types.ModuleType('torchvision')
        stub.__version__ = '0.0'
        sys.modules['torchvision'] = stub
    import mmcv.runner
    import mmcv.runner.epoch_based_runner as ebr
    import mmcv.runner.iter_based_runner as ibr
    import mmengine.runner.loops as loops
    for mod in (ebr, ibr, loops):
        mod.time = _NO_SLEEP
    if 'mmdet.core.hook.ema' not in sys.modules:
        spec = importlib.util.find_spec('mmdet')
        path = pathlib.Path(spec.submodule_search_locations[0]) / 'core' / 'hook' / 'ema.py'
        mspec = importlib.util.spec_from_file_location('mmdet.core.hook.ema', str(path))
        module = importlib.util.module_from_spec(mspec)
        sys.modules['mmdet.core.hook.ema'] = module
        mspec.loader.exec_module(module)
    return mmcv.runner


# -- recording -----------------------------------------------------------------------


def _hexf(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().item()
    return re.sub(r'0+p', 'p', float(value).hex()).replace('.p', 'p')


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f'{t.dtype}{tuple(t.shape)}'.encode())
    # a same-size integer view: the same bytes, and torch < 1.11 cannot view as uint8
    flat = t.reshape(-1)
    if flat.dtype.is_floating_point:
        flat = flat.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    h.update(flat.numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()[:16]


def _state_digest(state) -> Dict[str, str]:
    return {k: _digest(v) if isinstance(v, torch.Tensor) else repr(v) for k, v in state.items()}


def _get(module, dotted):
    obj = module
    for part in dotted.split('.'):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _unwrap(model):
    return model.module if isinstance(model, (nn.DataParallel,
                                              nn.parallel.DistributedDataParallel)) else model


def _probe(runner) -> List[Any]:
    model = _unwrap(runner.model)
    ema = None
    for hook in runner.hooks:
        if isinstance(getattr(hook, 'ema_model', None), nn.Module):
            ema = hook.ema_model
    w, nbt, rm = _get(model, 'fc.weight'), _get(model, 'bn.num_batches_tracked'), _get(model, 'bn.running_mean')
    steps = None
    if ema is not None:
        ema_w, ema_nbt = _get(ema, 'module.fc.weight'), _get(ema, 'module.bn.num_batches_tracked')
        steps = int(ema.steps)
    else:
        ema_w, ema_nbt = _get(model, 'ema_fc_weight'), _get(model, 'ema_bn_num_batches_tracked')
    return [None if w is None else _hexf(w[0, 0]), None if ema_w is None else _hexf(ema_w[0, 0]),
            None if nbt is None else int(nbt), None if ema_nbt is None else int(ema_nbt),
            None if rm is None else _hexf(rm[0]), steps]


MMCV_METHODS = ('before_run', 'after_run', 'before_epoch', 'after_epoch', 'before_iter',
                'after_iter', 'before_train_epoch', 'after_train_epoch', 'before_val_epoch',
                'after_val_epoch', 'before_train_iter', 'after_train_iter', 'before_val_iter',
                'after_val_iter')
MMENGINE_METHODS = ('before_run', 'after_load_checkpoint', 'before_train', 'before_train_epoch',
                    'before_train_iter', 'after_train_iter', 'after_train_epoch', 'before_val',
                    'before_val_epoch', 'before_val_iter', 'after_val_iter', 'after_val_epoch',
                    'after_val', 'before_save_checkpoint', 'after_train', 'before_test',
                    'before_test_epoch', 'before_test_iter', 'after_test_iter', 'after_test_epoch',
                    'after_test', 'after_run')


def _mmcv_recorder_cls():
    from mmcv.runner import Hook

    class MMCVRecorder(Hook):
        def __init__(self, rows, tag):
            self.rows, self.tag = rows, tag

    def make(name):
        def method(self, runner):
            self.rows.append([self.tag, name, runner.mode, runner.iter, runner.epoch,
                              runner.inner_iter, *_probe(runner), None])
        return method

    for name in MMCV_METHODS:
        setattr(MMCVRecorder, name, make(name))
    return MMCVRecorder


def _mmengine_recorder_cls():
    from mmengine.hooks import Hook

    class MMEngineRecorder(Hook):
        def __init__(self, rows, tag):
            self.rows, self.tag = rows, tag

    def make(name):
        def method(self, runner, **kwargs):
            extra = None
            if 'checkpoint' in kwargs:
                ckpt = kwargs['checkpoint']
                w = ckpt.get('state_dict', {}).get('fc.weight')
                extra = dict(keys=list(ckpt), sd_w=None if w is None else _hexf(w[0, 0]))
            self.rows.append([self.tag, name, None, runner.iter, runner.epoch,
                              kwargs.get('batch_idx'), *_probe(runner), extra])
        return method

    for name in MMENGINE_METHODS:
        setattr(MMEngineRecorder, name, make(name))
    return MMEngineRecorder


def _count_metric():
    from mmengine.evaluator import BaseMetric, Evaluator

    class CountMetric(BaseMetric):
        default_prefix = 'count'

        def process(self, data_batch, data_samples):
            self.results.append(len(data_samples))

        def compute_metrics(self, results):
            return dict(n=sum(results))

    return Evaluator(CountMetric())


# -- running one phase --------------------------------------------------------------

_LOGGER = logging.getLogger('gen_traces')
_LOGGER.setLevel(logging.ERROR)
_COUNTER = [0]


def _ema_cfgs(hooks, resume_from):
    out = []
    for cfg in hooks:
        cfg = dict(cfg)
        if resume_from is not None and 'EMA' in cfg['type']:
            cfg['resume_from'] = resume_from
        out.append(cfg)
    return out


def _run_mmcv(spec, work_dir, resume):
    runner_mod = _upstream()
    rows: List[list] = []
    model = TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    how = resume['how'] if resume else None
    path = resume['checkpoint'] if resume else None
    cls = runner_mod.EpochBasedRunner if spec['runner'] == 'epoch' else runner_mod.IterBasedRunner
    limits = dict(max_epochs=spec['max_epochs']) if spec['runner'] == 'epoch' else dict(
        max_iters=spec['max_iters'])
    runner = cls(model, optimizer=opt, work_dir=work_dir, logger=_LOGGER, meta={}, **limits)
    ckpt = spec['checkpoint']
    ckpt = dict(interval=ckpt) if isinstance(ckpt, int) else ckpt
    runner.register_training_hooks(
        lr_config=None, optimizer_config=dict(grad_clip=None), checkpoint_config=ckpt,
        log_config=None,
        custom_hooks_config=_ema_cfgs(spec['hooks'], path if how in ('hook', 'both') else None))
    rec = _mmcv_recorder_cls()
    runner.register_hook(rec(rows, 'hi'), priority='HIGHEST')
    runner.register_hook(rec(rows, 'lo'), priority='LOWEST')
    flow = [tuple(f) for f in spec['workflow']]
    loaders = [_loader(6, 1) if mode == 'train' else _loader(4, 2) for mode, _ in flow]
    error = None
    try:
        if how in ('runner', 'both'):
            runner.resume(path, map_location=resume.get('map_location', 'default'))
        elif how == 'load_from':
            runner.load_checkpoint(path)
        runner.run(loaders, flow)
    except Exception as exc:  # noqa: BLE001 - recorded
        error = exc
    return runner, model, rows, error


def _run_mmengine(spec, work_dir, resume):
    from mmengine.runner import Runner
    _upstream()
    rows: List[list] = []
    model = _engine_model()
    how = resume['how'] if resume else None
    path = resume['checkpoint'] if resume else None
    _COUNTER[0] += 1
    common = dict(work_dir=work_dir, custom_hooks=[dict(h) for h in spec['hooks']],
                  log_level='ERROR', experiment_name=f'trace{_COUNTER[0]}_{os.getpid()}',
                  default_scope='mmengine')
    if spec.get('checkpoint') is not None:
        common['default_hooks'] = dict(checkpoint=dict(spec['checkpoint']))
    val = spec.get('val', True)
    if how == 'test_load':
        runner = Runner(model=model, test_dataloader=_loader(4, 2), test_cfg=dict(),
                        test_evaluator=_count_metric(), load_from=path, **common)
    else:
        if spec['runner'] == 'epoch':
            train_cfg = dict(by_epoch=True, max_epochs=spec['max_epochs'])
        else:
            train_cfg = dict(by_epoch=False, max_iters=spec['max_iters'])
        train_cfg.update(val_interval=spec.get('val_interval', 1), val_begin=spec.get('val_begin', 1))
        kw: Dict[str, Any] = {}
        if val:
            kw.update(val_dataloader=_loader(4, 2), val_cfg=dict(), val_evaluator=_count_metric())
        if spec.get('test'):
            kw.update(test_dataloader=_loader(4, 2), test_cfg=dict(), test_evaluator=_count_metric())
        if how == 'auto':
            os.makedirs(work_dir, exist_ok=True)
            with open(os.path.join(work_dir, 'last_checkpoint'), 'w') as f:
                f.write(os.path.abspath(path))
            kw.update(resume=True)
        elif how == 'resume':
            kw.update(resume=True, load_from=path)
        elif how == 'load_from':
            kw.update(load_from=path)
        runner = Runner(model=model, train_dataloader=_loader(6, 1), train_cfg=train_cfg,
                        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
                        **common, **kw)
    rec = _mmengine_recorder_cls()
    runner.register_hook(rec(rows, 'hi'), priority='HIGHEST')
    runner.register_hook(rec(rows, 'lo'), priority='LOWEST')
    error = None
    try:
        if how == 'test_load':
            runner.test()
        else:
            runner.train()
            if spec.get('test'):
                runner.test()
    except Exception as exc:  # noqa: BLE001
        error = exc
    return runner, model, rows, error


def _summarize_ckpt(ckpt) -> Dict[str, Any]:
    meta = ckpt.get('meta', {})
    out: Dict[str, Any] = dict(keys=list(ckpt))
    m: Dict[str, Any] = dict(epoch=meta.get('epoch'), iter=meta.get('iter'))
    last = meta.get('hook_msgs', {}).get('last_ckpt')
    if last is not None:
        m['last_ckpt'] = os.path.basename(last)
    out['meta'] = m
    out['state_dict'] = _state_digest(ckpt['state_dict'])
    if 'ema_state_dict' in ckpt:
        out['ema_state_dict'] = _state_digest(ckpt['ema_state_dict'])
    if 'optimizer' in ckpt:
        out['optimizer'] = {str(i): _state_digest(s) for i, s in ckpt['optimizer'].get('state', {}).items()}
    return out


def _phase(spec, work_dir, resume=None) -> Dict[str, Any]:
    run = _run_mmcv if spec['framework'] == 'mmcv' else _run_mmengine
    runner, model, rows, error = run(spec, work_dir, resume)
    core = _unwrap(model)
    final_sd = core.state_dict()
    final: Dict[str, Any] = dict(state_dict=_state_digest(final_sd), w=_hexf(final_sd['fc.weight'][0, 0]))
    for hook in runner.hooks:
        if isinstance(getattr(hook, 'ema_model', None), nn.Module):
            ema_sd = hook.ema_model.state_dict()
            final['ema'] = _state_digest(ema_sd)
            final['ema_w'] = _hexf(ema_sd['module.fc.weight'][0, 0])
    if 'ema' not in final and 'ema_fc_weight' in final_sd:
        final['ema_w'] = _hexf(final_sd['ema_fc_weight'][0, 0])
    checkpoints, latest = {}, None
    for name in sorted(os.listdir(work_dir)):
        full = os.path.join(work_dir, name)
        if name == 'latest.pth':
            latest = os.readlink(full) if os.path.islink(full) else name
        elif name.endswith('.pth') and os.path.isfile(full):
            checkpoints[name] = _summarize_ckpt(torch.load(full, map_location='cpu', **_FULL_LOAD))
    hooks = []
    for h in runner.hooks:
        prio = h.priority
        if not isinstance(prio, int):
            from mmengine.runner.priority import get_priority
            prio = get_priority(prio)
        hooks.append([type(h).__name__, prio])
    err = None if error is None else (
        f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}')
    return dict(hooks=hooks, trace=rows, checkpoints=checkpoints, latest=latest, final=final,
                error=err)


def record(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one spec with the real runners: ``{'full': ..., 'resumed': ...}``."""
    with tempfile.TemporaryDirectory(prefix='gen-traces-') as root:
        full_dir = os.path.join(root, 'full')
        phases = dict(full=_phase(spec, full_dir))
        if spec.get('resume'):
            resume = dict(spec['resume'])
            resume['checkpoint'] = os.path.join(full_dir, resume.pop('from'))
            phases['resumed'] = _phase(spec, os.path.join(root, 'resumed'), resume)
    return phases


def dumps(record_: Dict[str, Any]) -> str:
    """Deterministic JSON: compact, one trace row per line."""
    def compact(obj):
        return json.dumps(obj, separators=(',', ':'), ensure_ascii=True)

    lines = ['{', f'"name":{compact(record_["name"])},']
    if 'environment' in record_:
        lines.append(f'"environment":{compact(record_["environment"])},')
    lines += [f'"spec":{compact(record_["spec"])},', '"phases":{']
    names = list(record_['phases'])
    for i, phase in enumerate(names):
        p = record_['phases'][phase]
        lines.append(f'{compact(phase)}:{{')
        for key in ('hooks', 'error', 'latest', 'final', 'checkpoints'):
            lines.append(f'{compact(key)}:{compact(p[key])},')
        lines.append('"trace":[')
        rows = [compact(r) for r in p['trace']]
        lines.extend(r + (',' if j < len(rows) - 1 else '') for j, r in enumerate(rows))
        lines.append(']}' + (',' if i < len(names) - 1 else ''))
    lines.append('}}')
    return '\n'.join(lines) + '\n'


def main(out_dir: pathlib.Path, names: Optional[List[str]] = None) -> List[pathlib.Path]:
    """Write ``out_dir/<scenario>.json`` for every scenario (or only ``names``); return the paths."""
    previous = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise results depend on the intra-op thread count
    try:
        return _write_all(pathlib.Path(out_dir), names)
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
        else:
            os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = previous


def _fingerprint() -> Dict[str, Any]:
    """The environment of this recording (``reference/_format.fingerprint``)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _format import fingerprint
    return fingerprint()


def _write_all(out_dir: pathlib.Path, names: Optional[List[str]]) -> List[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    env = _fingerprint()  # training numerics (GEMM, threads) are this machine's: tests compare
    # the recorded floats bitwise only where training_key(env) is theirs, the schedule everywhere
    for spec in SCENARIOS:
        if names is not None and spec['name'] not in names:
            continue
        rec = dict(name=spec['name'], environment=env, spec=spec, phases=record(spec))
        path = out_dir / f'{spec["name"]}.json'
        text = dumps(rec)
        tmp = path.with_suffix('.json.tmp')
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == '__main__':  # pragma: no cover
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parent / 'traces'
    for p in main(target, sys.argv[2:] or None):
        print(p)
