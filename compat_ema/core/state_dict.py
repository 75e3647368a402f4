"""Non-strict ``load_state_dict`` as mmcv 1.x and mmengine implement it.

Both upstream versions walk the module tree calling ``_load_from_state_dict``
themselves instead of ``nn.Module.load_state_dict``, which changes two things
users see: missing keys containing ``num_batches_tracked`` are ignored even
with ``strict=True``, and shape mismatches are collected into the message
(a warning when not strict) instead of always raising. Wrappers are unwrapped
at every level.
"""
from __future__ import annotations

import logging
from typing import Any, List, Mapping, NamedTuple, Optional

import torch.nn as nn

from .wrappers import unwrap

_LOG = logging.getLogger('compat_ema')


class LoadResult(NamedTuple):
    """Keys that did not match: ``missing`` (num_batches_tracked filtered) and ``unexpected``."""

    missing: List[str]
    unexpected: List[str]
    errors: List[str]


def load_state_dict(module: nn.Module, state_dict: Mapping[str, Any], strict: bool = False,
                    generation: str = 'mmengine',
                    logger: Optional[logging.Logger] = None) -> LoadResult:
    """Load ``state_dict`` into ``module`` like ``mmengine.runner.checkpoint.load_state_dict``
    (``generation='mmengine'``) or ``mmcv.runner.load_state_dict`` (``'mmcv'``).

    Raises RuntimeError with upstream's message when ``strict`` and anything
    does not match; otherwise logs that message as a warning.
    """
    unexpected: List[str] = []
    missing: List[str] = []
    errors: List[str] = []
    metadata = getattr(state_dict, '_metadata', None)
    state_dict = dict(state_dict)

    def load(mod: nn.Module, local: Mapping[str, Any], prefix: str = '') -> None:
        mod = unwrap(mod, generation)
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        mod._load_from_state_dict(local, prefix, local_metadata, True, missing, unexpected, errors)
        for name, child in mod._modules.items():
            if child is not None:
                child_prefix = prefix + name + '.'
                load(child, {k: v for k, v in local.items() if k.startswith(child_prefix)},
                     child_prefix)

    load(module, state_dict)
    missing_kept = [k for k in missing if 'num_batches_tracked' not in k]
    messages = list(errors)
    if unexpected:
        messages.append(f'unexpected key in source state_dict: {", ".join(unexpected)}\n')
    if missing_kept:
        messages.append(f'missing keys in source state_dict: {", ".join(missing_kept)}\n')
    if messages:
        messages.insert(0, 'The model and loaded state dict do not match exactly\n')
        text = '\n'.join(messages)
        if strict:
            raise RuntimeError(text)
        (logger or _LOG).warning(text)
    return LoadResult(missing_kept, unexpected, errors)
