"""mmedit 0.x / mmagic 1.x checkpoints: the EMA lives in a sibling sub-module of the model.

Layouts (no ``ema_*`` buffers, no ``ema_state_dict``):

* mmedit 0.16 (mmcv 1.x ``IterBasedRunner`` + ``ExponentialMovingAverageHook``):
  ``{'meta', 'state_dict', 'optimizer'}``; ``state_dict`` holds ``generator.*``
  and ``generator_ema.*`` (any ``<name>`` / ``<name>_ema`` pair); meta ``iter``
  is the completed iterations - 1. The hook runs at NORMAL priority *after*
  ``CheckpointHook`` (registered first at the same priority), so ``iter_N.pth``
  holds the EMA before the update of iteration N - 1.
* mmagic 1.2 with the hook: the same ``state_dict`` keys in mmengine's layout
  (``message_hub``, meta ``iter`` = completed iterations).
* mmagic 1.2 with ``BaseGAN(ema_config=...)``: the EMA is an mmengine averaged
  model, ``generator_ema.module.*`` plus ``generator_ema.steps``. (mmagic's own
  ``ExponentialMovingAverage`` also loads plain ``generator_ema.*`` keys, but
  then sets ``steps`` to 0, so its first update *copies* the generator and the
  EMA history is lost: :func:`to_mmagic` writes ``steps`` instead.)

:func:`detect` recognises them; :func:`to_mmagic` / :func:`to_mmedit` convert
(optimizer state carried as is: a dict of optimizers is what mmengine's
``OptimWrapperDict`` loads); :func:`ema_weights` gives the model's state with
the EMA in place of the source module, for inference.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .errors import CheckpointError

__all__ = ['GanLayout', 'detect', 'to_mmagic', 'to_mmedit', 'ema_weights', 'FAMILIES']

FAMILIES = ('mmedit', 'mmagic', 'mmagic-ema_config')
_ITER_FILE = re.compile(r'iter_(\d+)\.pth$')


@dataclass
class GanLayout:
    """What :func:`detect` found."""

    family: str                         # one of FAMILIES
    pairs: Dict[str, str]               # EMA prefix ('generator_ema') -> source ('generator')
    iters_done: Optional[int]
    steps: Dict[str, int] = field(default_factory=dict)  # ema_config form: prefix -> steps
    evidence: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def averaged_model(self) -> bool:
        return self.family == 'mmagic-ema_config'


def _is_mmengine(ckpt: dict) -> bool:
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    return 'message_hub' in ckpt or 'mmengine_version' in meta


def detect(ckpt: Any, filename: Optional[str] = None) -> Optional[GanLayout]:
    """The GAN-family layout of a loaded checkpoint dict, or None when it is not one."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('state_dict'), dict):
        return None
    if 'ema_state_dict' in ckpt:
        return None
    keys = [k for k in ckpt['state_dict'] if isinstance(k, str)]
    tops = {k.split('.', 1)[0] for k in keys if '.' in k}
    pairs = {t: t[:-4] for t in sorted(tops) if t.endswith('_ema') and t[:-4] in tops}
    if not pairs:
        return None
    ev = [f'state_dict has {", ".join(f"{e}.* beside {s}.*" for e, s in pairs.items())}']
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    steps = {e: int(ckpt['state_dict'][f'{e}.steps']) for e in pairs
             if f'{e}.steps' in ckpt['state_dict']}
    moduled = {e for e in pairs if any(k.startswith(f'{e}.module.') for k in keys)}
    it = meta.get('iter') if isinstance(meta.get('iter'), int) else None
    notes: List[str] = []
    if _is_mmengine(ckpt):
        family = 'mmagic-ema_config' if steps or moduled else 'mmagic'
        ev.append("mmengine layout ('message_hub' / meta.mmengine_version)")
        if steps:
            ev.append(f'{sorted(steps)}: module.* + steps (BaseGAN ema_config averaged model)')
        iters_done = it
    else:
        family = 'mmedit'
        ev.append("mmcv layout (no 'message_hub'): mmedit 0.x")
        iters_done = None if it is None else it + 1
        m = _ITER_FILE.search(filename or '')
        if m and it is not None and int(m.group(1)) != it + 1:
            notes.append(f'{filename}: meta iter {it} is not the file number - 1; used meta')
        if iters_done is not None:
            ev.append(f'meta iter {it} = completed iterations - 1 (IterBasedRunner): '
                      f'{iters_done} completed')
            notes.append('the EMA in an mmedit checkpoint misses the update of its last '
                         'iteration (the EMA hook runs after CheckpointHook at NORMAL priority)')
    return GanLayout(family, pairs, iters_done, steps, ev, notes)


def _meta(ckpt: dict) -> dict:
    return dict(ckpt['meta']) if isinstance(ckpt.get('meta'), dict) else {}


def to_mmagic(ckpt: dict, layout: GanLayout, ema_config: bool = False) -> "OrderedDict[str, Any]":
    """mmedit -> mmagic (mmengine layout). ``ema_config``: write BaseGAN's averaged-model keys
    (``<ema>.module.*`` + ``<ema>.steps`` = completed iterations) instead of the hook's."""
    if layout.family != 'mmedit':
        raise CheckpointError(f'not an mmedit 0.x checkpoint (found {layout.family})')
    if layout.iters_done is None:
        raise CheckpointError('meta has no iter: cannot tell where to resume')
    meta = {k: v for k, v in _meta(ckpt).items() if k not in ('epoch', 'iter', 'hook_msgs')}
    if 'config' in meta:  # mmengine's resume would parse an mmcv-era config for gpu_ids
        meta['mmedit_config'] = meta.pop('config')
    meta.update(epoch=0, iter=layout.iters_done)
    sd: "OrderedDict[str, Any]" = OrderedDict()
    for k, v in ckpt['state_dict'].items():
        top, _, rest = k.partition('.')
        if ema_config and top in layout.pairs:
            sd[f'{top}.module.{rest}'] = v
        else:
            sd[k] = v
    if ema_config:
        for top in layout.pairs:
            sd[f'{top}.steps'] = torch.tensor(layout.iters_done, dtype=torch.long)
    out: "OrderedDict[str, Any]" = OrderedDict(meta=meta, state_dict=sd)
    out['message_hub'] = {'log_scalars': {}, 'runtime_info': {}, 'resumed_keys': {}}
    if 'optimizer' in ckpt:
        out['optimizer'] = ckpt['optimizer']
    return out


def to_mmedit(ckpt: dict, layout: GanLayout) -> "OrderedDict[str, Any]":
    """mmagic (hook or ema_config form) -> mmedit 0.x (mmcv ``IterBasedRunner`` layout)."""
    if layout.family == 'mmedit':
        raise CheckpointError('already an mmedit 0.x checkpoint; nothing to convert')
    if layout.iters_done is None or layout.iters_done < 1:
        raise CheckpointError('meta iter must be >= 1 to write an mmcv IterBasedRunner file')
    meta = {k: v for k, v in _meta(ckpt).items() if k not in ('epoch', 'iter')}
    meta.update(epoch=1, iter=layout.iters_done - 1)
    sd: "OrderedDict[str, Any]" = OrderedDict()
    for k, v in ckpt['state_dict'].items():
        top, _, rest = k.partition('.')
        if top in layout.pairs and rest == 'steps':
            continue
        if top in layout.pairs and rest.startswith('module.'):
            rest = rest[len('module.'):]
        sd[f'{top}.{rest}'] = v
    out: "OrderedDict[str, Any]" = OrderedDict(meta=meta, state_dict=sd)
    if 'optimizer' in ckpt:
        out['optimizer'] = ckpt['optimizer']
    return out


def ema_weights(ckpt: dict, layout: GanLayout) -> "OrderedDict[str, torch.Tensor]":
    """The model's state dict with each source module's entries taken from its EMA module
    (``generator.x`` = ``generator_ema[.module].x``); the EMA entries themselves are dropped."""
    sd = ckpt['state_dict']
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    sources = {s: e for e, s in layout.pairs.items()}
    for k, v in sd.items():
        top, _, rest = k.partition('.')
        if top in layout.pairs:
            continue
        if top in sources:
            ema = sources[top]
            cand = f'{ema}.module.{rest}' if layout.averaged_model else f'{ema}.{rest}'
            if cand not in sd:
                raise CheckpointError(f'{k}: no EMA entry {cand} in the checkpoint')
            out[k] = sd[cand]
        else:
            out[k] = v
    return out
