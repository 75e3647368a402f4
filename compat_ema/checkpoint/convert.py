"""Convert EMA checkpoints between mmcv 1.x, mmdet 2.x and mmengine 0.x.

No upstream counterpart: OpenMMLab ships no converter between these layouts
(docs/upstream-quirks.md#migration-facts). Inputs are loaded safely
(:mod:`.safe_load`), validated completely, and only then written atomically
(:mod:`.atomic`), so a failure leaves no output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..core.atomic import check_output
from . import gan
from .errors import CheckpointError
from .formats import COMPAT_KEY, EMACheckpoint, parse
from .safe_load import load
from .writers import atomic_save, to_legacy, to_mmengine

__all__ = ['read', 'convert', 'build', 'check_strict', 'Result', 'TARGETS', 'GAN_TARGETS']

TARGETS = ('mmcv', 'mmdet', 'mmengine')
#: the GAN/restoration family (:mod:`.gan`): EMA in a ``<name>_ema`` sub-module
GAN_TARGETS = ('mmedit', 'mmagic')


@dataclass
class Result:
    """What a conversion wrote and why: the evidence for every decision, and any losses."""

    src: Path
    dst: Path
    source: str
    target: str
    evidence: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: why the result may not be exactly what the upstream needs to continue the run
    warnings: List[str] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable lines: source -> destination, then evidence, notes and warnings."""
        lines = [f'{self.src} ({self.source}) -> {self.dst} ({self.target})']
        lines += [f'  evidence: {e}' for e in self.evidence]
        lines += [f'  note: {n}' for n in self.notes]
        lines += [f'  WARNING: {w}' for w in self.warnings]
        return '\n'.join(lines)


def check_strict(warnings: Sequence[str], strict: bool) -> None:
    """``strict``: a warning is an error (raised before anything is written)."""
    if strict and warnings:
        more = f' (and {len(warnings) - 1} more)' if len(warnings) > 1 else ''
        raise CheckpointError(f'--strict: {warnings[0]}{more}')


def read(path, trust: bool = False, model_keys: Optional[Sequence[str]] = None, priority=None,
         by_epoch: Optional[bool] = None, need_counters: bool = True) -> EMACheckpoint:
    """Load ``path`` safely and parse it (see :func:`.formats.parse` for the options)."""
    return parse_loaded(load(path, trust=trust), path, model_keys, priority, by_epoch,
                        need_counters)


def parse_loaded(raw, path, model_keys: Optional[Sequence[str]] = None, priority=None,
                 by_epoch: Optional[bool] = None, need_counters: bool = True) -> EMACheckpoint:
    """:func:`read` for a checkpoint already loaded from ``path``."""
    try:
        return parse(raw, model_keys=model_keys, priority=priority,
                     by_epoch=by_epoch, filename=Path(path).resolve().name,
                     need_counters=need_counters)
    except CheckpointError as exc:
        msg = str(exc)
        if not msg.startswith(str(path)):
            msg = f'{path}: {msg}'
        raise type(exc)(msg) from None


def convert(src, dst, to: str, force: bool = False, model_keys: Optional[Sequence[str]] = None,
            param_keys: Optional[Sequence[str]] = None, source_priority=None,
            target_priority=None, skip_buffers: Optional[bool] = None,
            by_epoch: Optional[bool] = None, trust: bool = False, strict: bool = False,
            ema_config: bool = False) -> Result:
    """Convert the checkpoint ``src`` to the ``to`` generation's layout, written to ``dst``.

    ``to``: 'mmcv' (mmcv 1.6 ``EMAHook``), 'mmdet' (mmdet 2.28 EMA hooks) or
    'mmengine' (mmengine 0.10.7 ``EMAHook``). ``source_priority`` /
    ``by_epoch``: how the legacy source was written, when the file cannot tell
    (the evidence used is reported). ``target_priority`` / ``skip_buffers``:
    the legacy target hook's settings. ``model_keys``: the model's
    ``state_dict()`` keys (undoes the ``ema_`` renaming without guessing);
    ``param_keys``: which of them are parameters (mmcv tracks parameters only).
    Refuses ``dst`` equal to ``src`` and an existing ``dst`` unless ``force``.

    One rule per question (MIGRATION.md, "Converting"): a bare state dict is
    refused ("a state dict, not a runner checkpoint"); a conversion whose
    output would hold what the input holds (mmengine -> mmengine, mmdet ->
    mmdet with the same layout) is refused ("nothing to convert"); a file
    without EMA state converts with a note; a legacy file whose EMA side
    nothing decides is refused naming ``--source-priority``. What may make
    the result inexact is in ``Result.warnings``; ``strict`` refuses those.

    'mmedit' / 'mmagic': the GAN family (:mod:`.gan`; ``ema_config``: write mmagic
    ``BaseGAN(ema_config=...)``'s averaged-model keys instead of the hook's).
    """
    if to not in TARGETS + GAN_TARGETS:
        raise CheckpointError(f'unknown target {to!r}; choose one of {TARGETS + GAN_TARGETS}')
    src = Path(src)
    dst = check_output(dst, [src], force, CheckpointError, parent_must_exist=True)
    raw = load(src, trust=trust)
    layout = gan.detect(raw, src.name)
    if to in GAN_TARGETS or layout is not None:
        return _convert_gan(raw, layout, src, dst, to, force, ema_config)
    ck = parse_loaded(raw, src, model_keys=model_keys, priority=source_priority,
                      by_epoch=by_epoch)
    try:
        out = build(ck, to, param_keys, target_priority, skip_buffers)
        check_strict(ck.warnings, strict)
    except CheckpointError as exc:
        raise CheckpointError(f'{src}: {exc}') from None
    atomic_save(out, dst, [src], force)
    return Result(src, dst, ck.generation, to, ck.evidence, ck.notes, ck.warnings)


def _convert_gan(raw, layout, src: Path, dst: Path, to: str, force: bool,
                 ema_config: bool) -> Result:
    """mmedit 0.x <-> mmagic 1.x (:mod:`.gan`): the EMA is a ``<name>_ema`` sub-module."""
    if layout is None:
        raise CheckpointError(f'{src}: not an mmedit/mmagic checkpoint (no <name>_ema.* '
                              'beside <name>.* in state_dict)')
    if to not in ('mmedit', 'mmagic'):
        raise CheckpointError(f'{src}: an {layout.family} checkpoint (EMA in '
                              f'{sorted(layout.pairs)}); convert it with --to mmagic or '
                              '--to mmedit')
    try:
        out = (gan.to_mmagic(raw, layout, ema_config) if to == 'mmagic'
               else gan.to_mmedit(raw, layout))
    except CheckpointError as exc:
        raise CheckpointError(f'{src}: {exc}') from None
    atomic_save(out, dst, [src], force)
    return Result(src, dst, layout.family, to + ('-ema_config' if ema_config else ''),
                  layout.evidence, layout.notes)


def build(ck: EMACheckpoint, to: str, param_keys: Optional[Sequence[str]] = None,
          target_priority=None, skip_buffers: Optional[bool] = None):
    """The ``to`` layout of a parsed checkpoint, in memory (what :func:`convert` writes);
    adds to ``ck.notes`` / ``ck.warnings``; raises :class:`CheckpointError` on a refusal."""
    if to == 'mmengine':
        if ck.generation == 'mmengine':
            raise CheckpointError('already an mmengine checkpoint; nothing to convert')
        return to_mmengine(ck)
    out = to_legacy(ck, to, priority=target_priority, skip_buffers=skip_buffers, by_epoch=None,
                    param_keys=param_keys)
    if ck.generation != 'mmengine' and _same_layout(ck, out):
        raise CheckpointError(f'already a {to} checkpoint of this layout (the output would '
                              'hold the same keys and tensors); nothing to convert')
    return out


def _same_layout(ck: EMACheckpoint, out) -> bool:
    """Whether a legacy -> legacy output holds what the source held (same keys in the same
    order, the very same tensors, the same counters)."""
    sd = out['state_dict']
    if list(sd) != ck.state_dict_order:
        return False
    src = dict(ck.raw)
    for k, b in ck.ema_keys.items():
        a_val, b_val = (ck.ema[k], ck.raw[k]) if ck.ema_in_params else (ck.raw[k], ck.ema[k])  # type: ignore[index]
        src[k], src[b] = a_val, b_val
    same = all(sd[k] is src[k] or torch.equal(sd[k], src[k]) for k in sd)
    meta = {k: v for k, v in out['meta'].items() if k != COMPAT_KEY}
    return same and (meta.get('epoch'), meta.get('iter')) == (ck.meta.get('epoch'),
                                                              ck.meta.get('iter'))
