"""Module-wrapper unwrapping, per generation.

mmcv 1.x (``mmcv.parallel.is_module_wrapper``) and mmengine
(``mmengine.model.is_model_wrapper``) both answer with an ``isinstance`` check
against a registry of wrapper classes, subclasses included. A plain module that
merely has a ``.module`` attribute is *not* a wrapper in either.

Both registries hold torch ``DataParallel`` and ``DistributedDataParallel``.
The OpenMMLab wrapper classes (mmcv's deprecated ``MMDistributedDataParallel``,
which does not subclass torch DDP; mmengine's ``MMSeparateDistributedDataParallel``
and ``MMFullyShardedDataParallel``) are added by the integration layer when
those packages are imported, or by users with :func:`register_wrapper`.
"""
from __future__ import annotations

from typing import Dict, List, Type

import torch.nn as nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

_WRAPPERS: Dict[str, List[Type]] = {
    'mmcv': [DataParallel, DistributedDataParallel],
    'mmengine': [DataParallel, DistributedDataParallel],
}


def register_wrapper(cls: Type, generation: str = 'all') -> Type:
    """Treat ``cls`` (and its subclasses) as a module wrapper for a generation."""
    names = list(_WRAPPERS) if generation == 'all' else [generation]
    for name in names:
        if name not in _WRAPPERS:
            raise KeyError(f'unknown generation {name!r}; known: {sorted(_WRAPPERS)}')
        if cls not in _WRAPPERS[name]:
            _WRAPPERS[name].append(cls)
    return cls


def is_wrapper(model: nn.Module, generation: str) -> bool:
    """``is_module_wrapper`` (mmcv) / ``is_model_wrapper`` (mmengine)."""
    return isinstance(model, tuple(_WRAPPERS[generation]))


def unwrap(model: nn.Module, generation: str) -> nn.Module:
    """Return ``model.module`` when ``model`` is a wrapper, else ``model`` (one level, as upstream)."""
    return model.module if is_wrapper(model, generation) else model  # type: ignore[return-value]
