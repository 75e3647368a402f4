"""Export the EMA weights of a checkpoint of any generation as a plain state dict.

No upstream counterpart: mmdet's publishing scripts simply drop the ``ema_*``
keys / ``ema_state_dict`` (UPSTREAM_NOTES, "Migration facts"), which keeps
the *raw* weights in mmcv NORMAL-priority files. Here the EMA side is found
as for conversion (with the evidence reported) and written atomically.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

from . import gan
from .atomic import atomic_save, check_destination
from .convert import Result, parse_loaded
from .errors import CheckpointError
from .safe_load import load

__all__ = ['export_ema']


def export_ema(src, dst, force: bool = False, model_keys: Optional[Sequence[str]] = None,
               priority=None, by_epoch: Optional[bool] = None, trust: bool = False) -> Result:
    """Write a plain state dict of the EMA weights of ``src`` to ``dst``, for inference.

    The result is a flat ``{model key: tensor}`` dict (``model.load_state_dict``
    takes it as is; mmcv/mmengine ``load_checkpoint`` too). Keys the hook did
    not average (mmcv: buffers) hold the model's own values, as the EMA model
    of each generation does. Refuses a file without EMA state. mmedit/mmagic
    files: the model's keys with each ``<name>.*`` taken from ``<name>_ema``.
    """
    src = Path(src)
    dst = check_destination(dst, [src], force)
    raw = load(src, trust=trust)
    layout = gan.detect(raw, src.name)
    if layout is not None:  # mmedit / mmagic: generator.* <- generator_ema[.module].*
        try:
            sd = gan.ema_weights(raw, layout)
        except CheckpointError as exc:
            raise CheckpointError(f'{src}: {exc}') from None
        atomic_save(sd, dst, [src], force)
        return Result(src, dst, layout.family, 'state dict (EMA weights in the source modules; '
                      'the *_ema entries dropped)', layout.evidence, layout.notes)
    ck = parse_loaded(raw, src, model_keys=model_keys, priority=priority, by_epoch=by_epoch)
    if ck.ema is None:
        raise CheckpointError(f'{src}: no EMA weights in this checkpoint ({ck.evidence[-1]})')
    sd = OrderedDict((k, ck.ema.get(k, v)) for k, v in ck.raw.items())
    atomic_save(sd, dst, [src], force)
    return Result(src, dst, ck.generation, 'state dict (EMA weights)', ck.evidence, ck.notes)
