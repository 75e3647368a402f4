"""Run an EMA scenario through the fake runners in a few lines.

:func:`run_scenario` builds the model, data, optimizer, runner, default
hooks, the EMA hooks from config dicts and two trace recorders (HIGHEST and
LOWEST), optionally resumes or loads a checkpoint the way the chosen path does
upstream, runs, and returns a :class:`ScenarioResult` (trace, final tensors,
checkpoint contents).

:func:`run_spec` runs a JSON scenario *spec* (the format of
``reference/traces/*.json``): the uninterrupted run, then, if the spec has a
``resume`` entry, a fresh process-like run resumed from one of its
checkpoints, and returns the same JSON-able record ``reference/gen_traces.py``
writes from the real runners. :func:`summarize` turns one result into that
record.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..core.wrappers import unwrap
from .mmcv_runner import EpochBasedRunner, IterBasedRunner
from .mmengine_runner import Runner
from .models import TinyModel, make_loader
from .trace import MMCVRecorder, MMEngineRecorder, Trace, hexf, state_digest

__all__ = ['ScenarioResult', 'run_scenario', 'run_spec', 'summarize', 'summarize_checkpoint',
           'RESUME_PATHS', 'single_thread']

#: resume paths per framework: how a run starts from an earlier checkpoint
RESUME_PATHS = {
    'mmcv': ('runner', 'hook', 'both', 'load_from'),
    'mmengine': ('resume', 'auto', 'load_from', 'test_load'),
}

_LOGGER = logging.getLogger('compat_ema.testing.scenario')


@dataclass
class ScenarioResult:
    """What :func:`run_scenario` returns.

    Attributes:
        trace: every hook call seen by the recorders (tags ``'hi'``, ``'lo'``).
        hooks: ``[(class name, priority), ...]`` in call order.
        model: the (unwrapped) model after the run.
        final: a clone of ``model.state_dict()`` after the run.
        ema: the mmengine EMA model's ``state_dict()`` clone, or None.
        checkpoints: file name -> the loaded checkpoint dict, for every ``*.pth``
            written in ``work_dir`` (``latest.pth`` excluded).
        latest: the file ``latest.pth`` links to, or None.
        work_dir: where the run wrote.
        runner: the runner object.
        error: the exception that stopped the run, or None.
    """

    trace: Trace
    hooks: List[tuple]
    model: nn.Module
    final: Dict[str, torch.Tensor]
    ema: Optional[Dict[str, torch.Tensor]]
    checkpoints: Dict[str, Dict[str, Any]]
    latest: Optional[str]
    work_dir: str
    runner: Any
    error: Optional[BaseException] = None


def _ema_hook_cfgs(hooks: Sequence[dict], resume_from: Optional[str]) -> List[dict]:
    out = []
    for cfg in hooks:
        cfg = dict(cfg)
        if resume_from is not None and 'EMA' in str(cfg.get('type', '')):
            cfg['resume_from'] = resume_from
        out.append(cfg)
    return out


def run_scenario(framework: str = 'mmcv', runner: str = 'epoch', *,
                 model: Optional[nn.Module] = None, data: Optional[Iterable] = None,
                 val_data: Optional[Iterable] = None,
                 optimizer: Optional[dict] = None, hooks: Sequence[dict] = (),
                 max_epochs: Optional[int] = None, max_iters: Optional[int] = None,
                 workflow: Optional[Sequence] = None, checkpoint: Union[int, dict, None] = 1,
                 val_interval: int = 1, val_begin: int = 1, val: bool = True,
                 test: bool = False, resume: Optional[dict] = None,
                 work_dir: Optional[str] = None, recorders: Sequence[str] = ('HIGHEST', 'LOWEST'),
                 meta: Optional[dict] = None, catch: bool = False,
                 logger: Optional[logging.Logger] = None,
                 probes: Optional[Dict[str, Any]] = None) -> ScenarioResult:
    """Run one scenario through the harness.

    Args:
        framework: ``'mmcv'`` (mmcv/mmdet hooks under mmcv's runners) or ``'mmengine'``.
        runner: ``'epoch'`` or ``'iter'`` (mmcv runner class / mmengine train loop).
        model: defaults to :class:`TinyModel` (seed 0).
        data, val_data: batches; default :func:`make_loader` (6 and 4 samples, batch 2).
        optimizer: ``dict(type='SGD', lr=0.1, momentum=0.9)`` by default.
        hooks: EMA (or other) hook configs with optional ``priority``; built from
            :data:`compat_ema.registry.HOOKS` (scope ``'mmdet'`` for mmcv, ``'mmengine'``).
        max_epochs, max_iters: the run length (one of them).
        workflow: mmcv only; default ``[('train', 1)]``.
        checkpoint: an interval, a CheckpointHook config dict, or None (mmcv: no
            checkpoint hook; mmengine: the default hook, interval 1).
        val_interval, val_begin, val: mmengine val loop settings (``val=False`` drops it).
        test: mmengine: call ``runner.test()`` after ``train()`` on the same runner.
        resume: ``dict(how=..., checkpoint=path[, map_location=...])``; ``how`` in
            :data:`RESUME_PATHS` (mmcv 'runner' = ``runner.resume`` before ``run``, as
            mmdet's ``train_detector``; 'hook' = the EMA hooks' ``resume_from``;
            'both'; 'load_from'. mmengine 'resume' = ``resume=True, load_from=path``;
            'auto' = ``resume=True`` with ``work_dir/last_checkpoint`` naming path (without
            a path: the file an earlier run left in ``work_dir``);
            'load_from'; 'test_load' = a fresh ``runner.test()`` with ``load_from``).
        work_dir: default a new temporary folder.
        recorders: priorities of the two trace recorders (tags 'hi', 'lo'); () for none.
        meta: mmcv runner meta (default ``{}``, so CheckpointHook records hook_msgs).
        catch: return the exception in ``error`` instead of raising.
        probes: extra ``{name: fn(runner)}`` recorded in every trace row's ``x``.
    """
    if framework not in RESUME_PATHS:
        raise ValueError(f"framework must be 'mmcv' or 'mmengine', got {framework!r}")
    if runner not in ('epoch', 'iter'):
        raise ValueError(f"runner must be 'epoch' or 'iter', got {runner!r}")
    if (max_epochs is None) == (max_iters is None):
        raise ValueError('give exactly one of max_epochs and max_iters')
    if resume is not None and resume.get('how') not in RESUME_PATHS[framework]:
        raise ValueError(f"resume['how'] must be one of {RESUME_PATHS[framework]} for "
                         f"{framework}, got {resume.get('how')!r}")
    model = TinyModel(0) if model is None else model
    data = make_loader(6) if data is None else data
    val_data = make_loader(4, seed=2) if val_data is None else val_data
    optimizer = dict(type='SGD', lr=0.1, momentum=0.9) if optimizer is None else dict(optimizer)
    work_dir = tempfile.mkdtemp(prefix='compat-ema-') if work_dir is None else work_dir
    trace = Trace()
    tags = ('hi', 'lo')
    how = resume.get('how') if resume else None
    path = resume.get('checkpoint') if resume else None
    error: Optional[BaseException] = None
    if framework == 'mmcv':
        run = _build_mmcv(runner, model, optimizer, work_dir, meta, max_epochs, max_iters,
                          checkpoint, _ema_hook_cfgs(hooks, path if how in ('hook', 'both') else None),
                          logger)
        for tag, prio in zip(tags, recorders):
            run.register_hook(MMCVRecorder(trace, tag, probes), priority=prio)
        flow = [tuple(f) for f in (workflow or [('train', 1)])]
        loaders = [data if mode == 'train' else val_data for mode, _ in flow]
        try:
            if how in ('runner', 'both'):
                run.resume(path, map_location=resume.get('map_location', 'default'))  # type: ignore[union-attr]
            elif how == 'load_from':
                run.load_checkpoint(path)
            run.run(loaders, flow)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            if not catch:
                raise
            error = exc
    else:
        run = _build_mmengine(runner, model, optimizer, work_dir, max_epochs, max_iters,
                              checkpoint, list(hooks), data, val_data, val, val_interval,
                              val_begin, test, how, path, logger)
        for tag, prio in zip(tags, recorders):
            run.register_hook(MMEngineRecorder(trace, tag, probes), priority=prio)
        try:
            if how == 'test_load':
                run.test()
            else:
                run.train()
                if test:
                    run.test()
        except Exception as exc:  # noqa: BLE001
            if not catch:
                raise
            error = exc
    core = unwrap(model, framework)
    ema_state = None
    for hook in run.hooks:
        if isinstance(getattr(hook, 'ema_model', None), nn.Module):
            ema_state = {k: v.detach().clone() for k, v in hook.ema_model.state_dict().items()}
    checkpoints: Dict[str, Dict[str, Any]] = {}
    latest = None
    for name in sorted(os.listdir(work_dir)):
        full = os.path.join(work_dir, name)
        if name == 'latest.pth':
            latest = os.readlink(full) if os.path.islink(full) else name
        elif name.endswith('.pth') and os.path.isfile(full):
            checkpoints[name] = torch.load(full, map_location='cpu')
    return ScenarioResult(trace, run.get_hook_info(), core,
                          {k: v.detach().clone() for k, v in core.state_dict().items()},
                          ema_state, checkpoints, latest, work_dir, run, error)


def _build_mmcv(kind, model, optimizer, work_dir, meta, max_epochs, max_iters, checkpoint, hooks,
                logger):
    opt_cfg = dict(optimizer)
    opt = getattr(torch.optim, opt_cfg.pop('type'))(unwrap(model, 'mmcv').parameters(), **opt_cfg)
    cls = EpochBasedRunner if kind == 'epoch' else IterBasedRunner
    run = cls(model, optimizer=opt, work_dir=work_dir, logger=logger,
              meta={} if meta is None else meta, max_epochs=max_epochs, max_iters=max_iters)
    ckpt = dict(interval=checkpoint) if isinstance(checkpoint, int) else checkpoint
    run.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                checkpoint_config=ckpt, log_config=None,
                                custom_hooks_config=list(hooks))
    return run


def _build_mmengine(kind, model, optimizer, work_dir, max_epochs, max_iters, checkpoint, hooks,
                    data, val_data, val, val_interval, val_begin, test, how, path, logger):
    if kind == 'epoch':
        train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=val_interval,
                         val_begin=val_begin)
    else:
        train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=val_interval,
                         val_begin=val_begin)
    default_hooks = None
    if checkpoint is not None:
        ckpt = dict(interval=checkpoint) if isinstance(checkpoint, int) else dict(checkpoint)
        ckpt.setdefault('type', 'CheckpointHook')
        default_hooks = dict(checkpoint=ckpt)
    kwargs: Dict[str, Any] = {}
    if how == 'test_load':
        return Runner(model, work_dir, test_dataloader=val_data, test_cfg=dict(),
                      custom_hooks=hooks, default_hooks=default_hooks, load_from=path,
                      logger=logger)
    if how == 'auto':
        if path is not None:  # else: work_dir/last_checkpoint written by an earlier run
            os.makedirs(work_dir, exist_ok=True)
            with open(os.path.join(work_dir, 'last_checkpoint'), 'w') as f:
                f.write(os.path.abspath(path))
        kwargs.update(resume=True)
    elif how == 'resume':
        kwargs.update(resume=True, load_from=path)
    elif how == 'load_from':
        kwargs.update(load_from=path)
    if val:
        kwargs.update(val_dataloader=val_data, val_cfg=dict())
    if test:
        kwargs.update(test_dataloader=val_data, test_cfg=dict())
    return Runner(model, work_dir, train_dataloader=data, train_cfg=train_cfg,
                  optim_wrapper=dict(optimizer=dict(optimizer)), default_hooks=default_hooks,
                  custom_hooks=hooks, logger=logger, **kwargs)


# -- JSON records (the format of reference/traces/*.json) -------------------------


def summarize_checkpoint(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """Keys, meta counters, tensor digests of one checkpoint (time/paths left out)."""
    meta = ckpt.get('meta', {})
    out: Dict[str, Any] = dict(keys=list(ckpt))
    m: Dict[str, Any] = dict(epoch=meta.get('epoch'), iter=meta.get('iter'))
    last = meta.get('hook_msgs', {}).get('last_ckpt')
    if last is not None:
        m['last_ckpt'] = os.path.basename(last)
    out['meta'] = m
    out['state_dict'] = state_digest(ckpt['state_dict'])
    if 'ema_state_dict' in ckpt:
        out['ema_state_dict'] = state_digest(ckpt['ema_state_dict'])
    if 'optimizer' in ckpt:
        state = ckpt['optimizer'].get('state', {})
        out['optimizer'] = {str(i): state_digest(s) for i, s in state.items()}
    return out


def _error_text(exc: Optional[BaseException]) -> Optional[str]:
    if exc is None:
        return None
    return f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}'


def summarize(result: ScenarioResult) -> Dict[str, Any]:
    """The JSON-able record of one run: hooks, trace rows, checkpoints, final digests."""
    final = dict(state_dict=state_digest(result.final))
    w = result.final.get('fc.weight')
    final['w'] = None if w is None else hexf(w[0, 0])  # type: ignore[assignment]
    if result.ema is not None:
        final['ema'] = state_digest(result.ema)
        final['ema_w'] = hexf(result.ema['module.fc.weight'][0, 0])  # type: ignore[assignment]
    elif 'ema_fc_weight' in result.final:
        final['ema_w'] = hexf(result.final['ema_fc_weight'][0, 0])  # type: ignore[assignment]
    return dict(hooks=[list(h) for h in result.hooks], trace=result.trace.as_lists(),
                checkpoints={k: summarize_checkpoint(v) for k, v in result.checkpoints.items()},
                latest=result.latest, final=final, error=_error_text(result.error))


_SPEC_KEYS = ('framework', 'runner', 'hooks', 'max_epochs', 'max_iters', 'workflow', 'checkpoint',
              'val_interval', 'val_begin', 'val', 'test')


@contextlib.contextmanager
def single_thread():
    """Run torch single-threaded inside the block (restoring the count after).

    CPU float results of some kernels (BatchNorm's reductions here) depend on
    the intra-op thread count; the reference traces are recorded with one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_spec(spec: Dict[str, Any], root: Optional[str] = None) -> Dict[str, Any]:
    """Run a trace spec (``full`` run, then ``resumed`` if ``spec['resume']``); return the record.

    Runs single-threaded (:func:`single_thread`), as ``reference/gen_traces.py`` does.
    """
    with single_thread():
        return _run_spec(spec, root)


def _run_spec(spec: Dict[str, Any], root: Optional[str]) -> Dict[str, Any]:
    root = tempfile.mkdtemp(prefix='compat-ema-spec-') if root is None else root
    kwargs = {k: copy.deepcopy(spec[k]) for k in _SPEC_KEYS if k in spec}
    full_dir = os.path.join(root, 'full')
    phases = dict(full=summarize(run_scenario(work_dir=full_dir, catch=True, **kwargs)))
    res = spec.get('resume')
    if res:
        resume = dict(res)
        resume['checkpoint'] = os.path.join(full_dir, resume.pop('from'))
        kwargs.update(resume=resume)
        for key, value in res.get('override', {}).items():
            kwargs[key] = value
        resume.pop('override', None)
        phases['resumed'] = summarize(run_scenario(work_dir=os.path.join(root, 'resumed'),
                                                   catch=True, **kwargs))
    return phases
