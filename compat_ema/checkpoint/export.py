"""Export the EMA weights of a checkpoint of any generation as a plain state dict.

No upstream counterpart: mmdet's publishing scripts simply drop the ``ema_*``
keys / ``ema_state_dict`` (docs/upstream-quirks.md#migration-facts), which keeps
the *raw* weights in mmcv NORMAL-priority files. Here the EMA side is found
as for conversion (with the evidence reported) and written atomically.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

from ..core.atomic import check_output
from . import gan
from .convert import Result, check_strict, parse_loaded
from .errors import CheckpointError
from .safe_load import load
from .writers import atomic_save

__all__ = ['export_ema', 'export_warnings']


def export_warnings(ck) -> list:
    """The warnings of ``ck`` that matter for an export: an assumed runner kind only where it
    put the EMA in the model keys (an IterBasedRunner never swaps); the counters it also
    decides are not exported."""
    return [w for w in ck.warnings if not (w.startswith('runner kind') and not ck.ema_in_params)]


def export_ema(src, dst, force: bool = False, model_keys: Optional[Sequence[str]] = None,
               priority=None, by_epoch: Optional[bool] = None, trust: bool = False,
               strict: bool = False) -> Result:
    """Write a plain state dict of the EMA weights of ``src`` to ``dst``, for inference.

    The result is a flat ``{model key: tensor}`` dict (``model.load_state_dict``
    takes it as is; mmcv/mmengine ``load_checkpoint`` too). Keys the hook did
    not average (mmcv: buffers) hold the model's own values, as the EMA model
    of each generation does; tied weights stay one tensor. Reads runner
    checkpoints and bare state dicts with ``ema_*`` keys alike. Refuses a file
    without EMA state, and a legacy file whose EMA side nothing decides
    (naming ``--source-priority``). mmedit/mmagic files: the model's keys with each
    ``<name>.*`` taken from ``<name>_ema``.
    """
    src = Path(src)
    dst = check_output(dst, [src], force, CheckpointError, parent_must_exist=True)
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
    ck = parse_loaded(raw, src, model_keys=model_keys, priority=priority, by_epoch=by_epoch,
                      need_counters=False)
    if ck.ema is None:
        raise CheckpointError(f'{src}: no EMA weights in this checkpoint ({ck.evidence[-1]})')
    sd = OrderedDict((k, ck.ema.get(k, v)) for k, v in ck.raw.items())
    for alias, primary in ck.aliases.items():
        sd[alias] = sd[primary]
    warnings = export_warnings(ck)
    try:
        check_strict(warnings, strict)
    except CheckpointError as exc:
        raise CheckpointError(f'{src}: {exc}') from None
    atomic_save(sd, dst, [src], force)
    return Result(src, dst, ck.generation, 'state dict (EMA weights)', ck.evidence, ck.notes,
                  warnings)
