"""mmcv 1.6 checkpoint functions: ``get_state_dict``, ``save_checkpoint``, ``load_checkpoint``.

Reproduces ``mmcv.runner.checkpoint`` (see ``docs/runner-behaviour.md``):

* :func:`get_state_dict` unwraps module wrappers at every level and writes
  **every** buffer, non-persistent ones and the EMA hooks' ``ema_*`` buffers
  included; a module's own tensors come before its children's, so top-level
  ``ema_*`` buffers come first;
* :func:`save_checkpoint` writes ``{'meta', 'state_dict', 'optimizer'}``, adds
  ``mmcv_version`` and ``time`` (and ``CLASSES``) to meta, tensors on the CPU
  (on a CPU model ``.cpu()`` returns the same tensors); the write is atomic;
* :func:`load_checkpoint` strips ``^module.`` and loads non-strictly through
  :func:`compat_ema.core.state_dict.load_state_dict` (``generation='mmcv'``):
  unexpected ``ema_*`` keys are reported and dropped, missing
  ``num_batches_tracked`` keys are ignored.
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.optim import Optimizer

from ...core.atomic import write_atomic
from ...core.state_dict import load_state_dict
from ...core.wrappers import is_wrapper

#: the version string written into ``meta['mmcv_version']``
MMCV_VERSION = '1.6.0'


def get_state_dict(module: nn.Module, destination: Optional[OrderedDict] = None,
                   prefix: str = '', keep_vars: bool = False) -> OrderedDict:
    """``mmcv.runner.get_state_dict``: parameters and *all* buffers, wrappers unwrapped."""
    if is_wrapper(module, 'mmcv'):
        module = module.module  # type: ignore[assignment]
    if destination is None:
        destination = OrderedDict()
        destination._metadata = OrderedDict()  # type: ignore[attr-defined]
    destination._metadata[prefix[:-1]] = local_metadata = dict(version=module._version)  # type: ignore[attr-defined]
    for name, param in module._parameters.items():
        if param is not None:
            destination[prefix + name] = param if keep_vars else param.detach()
    for name, buf in module._buffers.items():
        if buf is not None:  # no check of _non_persistent_buffers_set, as mmcv
            destination[prefix + name] = buf if keep_vars else buf.detach()
    for name, child in module._modules.items():
        if child is not None:
            get_state_dict(child, destination, prefix + name + '.', keep_vars=keep_vars)
    for hook in module._state_dict_hooks.values():
        result = hook(module, destination, prefix, local_metadata)
        if result is not None:
            destination = result
    return destination


def weights_to_cpu(state_dict: Dict[str, torch.Tensor]) -> OrderedDict:
    """``val.cpu()`` for every entry, keeping ``_metadata`` (same tensors on a CPU model)."""
    out = OrderedDict((k, v.cpu()) for k, v in state_dict.items())
    out._metadata = getattr(state_dict, '_metadata', OrderedDict())  # type: ignore[attr-defined]
    return out


def atomic_torch_save(obj: Any, filename: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    write_atomic(filename, lambda f: torch.save(obj, f))


def save_checkpoint(model: nn.Module, filename: str, optimizer: Union[Optimizer, Dict, None] = None,
                    meta: Optional[dict] = None) -> Dict[str, Any]:
    """``mmcv.runner.save_checkpoint``; returns the dict it wrote."""
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise TypeError(f'meta must be a dict or None, but got {type(meta)}')
    meta.update(mmcv_version=MMCV_VERSION, time=time.asctime())
    if is_wrapper(model, 'mmcv'):
        model = model.module  # type: ignore[assignment]
    if getattr(model, 'CLASSES', None) is not None:
        meta.update(CLASSES=model.CLASSES)
    checkpoint: Dict[str, Any] = {'meta': meta, 'state_dict': weights_to_cpu(get_state_dict(model))}
    if isinstance(optimizer, Optimizer):
        checkpoint['optimizer'] = optimizer.state_dict()
    elif isinstance(optimizer, dict):
        checkpoint['optimizer'] = {name: opt.state_dict() for name, opt in optimizer.items()}
    atomic_torch_save(checkpoint, filename)
    return checkpoint


def symlink(src: str, dst: str) -> None:
    """``mmcv.symlink(src, dst, overwrite=True)``: replace ``dst`` by a link to ``src``."""
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(src, dst)


def load_checkpoint(model: nn.Module, filename: str,
                    map_location: Union[str, Callable, None] = None, strict: bool = False,
                    logger: Optional[logging.Logger] = None,
                    revise_keys: List[Tuple[str, str]] = [(r'^module\.', '')]) -> dict:
    """``mmcv.runner.load_checkpoint``: load ``filename`` into ``model``, return the dict."""
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    checkpoint = torch.load(filename, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'No state_dict found in checkpoint file {filename}')
    state_dict = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    for pattern, repl in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
    state_dict._metadata = metadata  # type: ignore[union-attr]
    load_state_dict(model, state_dict, strict=strict, generation='mmcv', logger=logger)
    return checkpoint
