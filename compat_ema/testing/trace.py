"""Trace recording: every hook call with the runner counters and tensor probes.

A :class:`Trace` is a list of :class:`TraceEntry` rows. Two recorder hooks,
:class:`MMCVRecorder` (mmcv-style names, ``runner.inner_iter``) and
:class:`MMEngineRecorder` (mmengine-style names, ``batch_idx``), override every
hook method and append a row; register them at HIGHEST and LOWEST priority to
see the state before and after the other hooks of a stage, as docs/runner-behaviour.md's
experiments did. ``reference/gen_traces.py`` writes the same rows from the real
runners, so traces compare with ``==``.

Probes (all optional, None when absent), for a model with ``fc`` and ``bn``:

* ``w``: ``fc.weight[0, 0]`` of the unwrapped model, as a :func:`hexf` string;
* ``ema_w``: the EMA copy of it (mmcv/mmdet buffer ``ema_fc_weight``, or the
  mmengine ``EMAHook``'s ``ema_model.module.fc.weight``);
* ``nbt`` / ``ema_nbt``: ``bn.num_batches_tracked`` of the model / EMA copy;
* ``rm``: ``bn.running_mean[0]``; ``steps``: the mmengine averaged model's ``steps``;
* ``x``: extra data for ``before_save_checkpoint``/``after_load_checkpoint``
  (the checkpoint's keys and its ``state_dict['fc.weight'][0, 0]``).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import torch
import torch.nn as nn

from ..core.torch_features import bits_view
from ..core.wrappers import unwrap
from ..mmcv.runner.hooks.hook import Hook as MMCVHook
from ..mmengine.hooks.hook import Hook as MMEngineHook

__all__ = ['hexf', 'tensor_digest', 'state_digest', 'TraceEntry', 'Trace', 'probe',
           'MMCVRecorder', 'MMEngineRecorder', 'MMCV_METHODS', 'MMENGINE_METHODS']

_TRAILING = re.compile(r'0+p')


def hexf(value: Any) -> str:
    """``float.hex`` of ``value`` with the mantissa's trailing zeros removed (exact)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().item()
    text = float(value).hex()
    return _TRAILING.sub('p', text).replace('.p', 'p')


def tensor_digest(t: torch.Tensor) -> str:
    """First 16 hex digits of sha256 over dtype, shape and the raw bytes (bitwise identity)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f'{t.dtype}{tuple(t.shape)}'.encode())
    h.update(bits_view(t.reshape(-1)).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()[:16]


def state_digest(state: Dict[str, Any]) -> Dict[str, str]:
    """``{key: tensor_digest}`` in the dict's order (non-tensors as ``repr``)."""
    return {k: tensor_digest(v) if isinstance(v, torch.Tensor) else repr(v)
            for k, v in state.items()}


class TraceEntry(NamedTuple):
    """One hook call: recorder tag, method, counters and probes (see module doc)."""

    rec: str
    method: str
    mode: Optional[str]
    iter: int
    epoch: int
    inner: Optional[int]
    w: Optional[str]
    ema_w: Optional[str]
    nbt: Optional[int]
    ema_nbt: Optional[int]
    rm: Optional[str]
    steps: Optional[int]
    x: Optional[Dict[str, Any]]

    def as_list(self) -> List[Any]:
        """The JSON row written to ``reference/traces/*.json``."""
        return list(self)


class Trace(list):
    """A list of :class:`TraceEntry` with small helpers."""

    def methods(self, rec: Optional[str] = None) -> List[str]:
        """Method names in call order (of one recorder if ``rec`` is given)."""
        return [e.method for e in self if rec is None or e.rec == rec]

    def where(self, method: str, rec: Optional[str] = None) -> List[TraceEntry]:
        """Entries of one method (and recorder)."""
        return [e for e in self if e.method == method and (rec is None or e.rec == rec)]

    def as_lists(self) -> List[List[Any]]:
        return [e.as_list() for e in self]


def _get(module: nn.Module, dotted: str) -> Optional[torch.Tensor]:
    obj: Any = module
    for part in dotted.split('.'):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _ema_module(runner) -> Optional[nn.Module]:
    for hook in getattr(runner, '_hooks', []):
        ema = getattr(hook, 'ema_model', None)
        if isinstance(ema, nn.Module):
            return ema
    return None


def probe(runner, model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """The probe values of the trace rows, read from ``runner`` now."""
    model = model if model is not None else unwrap(runner.model, 'mmcv')
    w = _get(model, 'fc.weight')
    nbt = _get(model, 'bn.num_batches_tracked')
    rm = _get(model, 'bn.running_mean')
    ema = _ema_module(runner)
    steps = None
    if ema is not None:
        ema_w = _get(ema, 'module.fc.weight')
        ema_nbt = _get(ema, 'module.bn.num_batches_tracked')
        steps = int(ema.steps) if hasattr(ema, 'steps') else None  # type: ignore[arg-type]
    else:
        ema_w = _get(model, 'ema_fc_weight')
        ema_nbt = _get(model, 'ema_bn_num_batches_tracked')
    return dict(
        w=None if w is None else hexf(w[0, 0]),
        ema_w=None if ema_w is None else hexf(ema_w[0, 0]),
        nbt=None if nbt is None else int(nbt),
        ema_nbt=None if ema_nbt is None else int(ema_nbt),
        rm=None if rm is None else hexf(rm[0]),
        steps=steps)


def _checkpoint_extra(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    sd = checkpoint.get('state_dict', {})
    w = sd.get('fc.weight')
    return dict(keys=list(checkpoint), sd_w=None if w is None else hexf(w[0, 0]))


MMCV_METHODS = ('before_run', 'after_run', 'before_epoch', 'after_epoch', 'before_iter',
                'after_iter', 'before_train_epoch', 'after_train_epoch', 'before_val_epoch',
                'after_val_epoch', 'before_train_iter', 'after_train_iter', 'before_val_iter',
                'after_val_iter')

MMENGINE_METHODS = MMEngineHook.stages


def _mmcv_method(name: str) -> Callable:
    def method(self, runner):
        self._record(runner, name)
    method.__name__ = name
    return method


class MMCVRecorder(MMCVHook):
    """An mmcv-style hook that records every call (all 14 method names, no forwarding).

    Args:
        trace: the :class:`Trace` to append to.
        tag: the ``rec`` field of its rows (e.g. ``'hi'``/``'lo'``).
        probes: optional ``{name: fn(runner) -> value}``; values land in the row's ``x``.
    """

    def __init__(self, trace: Trace, tag: str, probes: Optional[Dict[str, Callable]] = None):
        self.trace = trace
        self.tag = tag
        self.probes = dict(probes or {})

    def _record(self, runner, name: str) -> None:
        p = probe(runner)
        extra = {k: fn(runner) for k, fn in self.probes.items()} or None
        self.trace.append(TraceEntry(self.tag, name, getattr(runner, 'mode', None), runner.iter,
                                     runner.epoch, runner.inner_iter, p['w'], p['ema_w'], p['nbt'],
                                     p['ema_nbt'], p['rm'], p['steps'], extra))


for _name in MMCV_METHODS:
    setattr(MMCVRecorder, _name, _mmcv_method(_name))


def _mmengine_method(name: str) -> Callable:
    def method(self, runner, **kwargs):
        self._record(runner, name, kwargs)
    method.__name__ = name
    return method


class MMEngineRecorder(MMEngineHook):
    """An mmengine-style hook that records every stage (with ``batch_idx`` as ``inner``).

    Args:
        trace: the :class:`Trace` to append to.
        tag: the ``rec`` field of its rows.
        probes: optional ``{name: fn(runner) -> value}``; values land in the row's ``x``.
    """

    def __init__(self, trace: Trace, tag: str, probes: Optional[Dict[str, Callable]] = None):
        self.trace = trace
        self.tag = tag
        self.probes = dict(probes or {})

    def _record(self, runner, name: str, kwargs: Dict[str, Any]) -> None:
        p = probe(runner, unwrap(runner.model, 'mmengine'))
        extra = None
        if 'checkpoint' in kwargs:
            extra = _checkpoint_extra(kwargs['checkpoint'])
        if self.probes:
            extra = dict(extra or {}, **{k: fn(runner) for k, fn in self.probes.items()})
        self.trace.append(TraceEntry(self.tag, name, None, runner.iter, runner.epoch,
                                     kwargs.get('batch_idx'), p['w'], p['ema_w'], p['nbt'],
                                     p['ema_nbt'], p['rm'], p['steps'], extra))


for _name in MMENGINE_METHODS:
    setattr(MMEngineRecorder, _name, _mmengine_method(_name))
