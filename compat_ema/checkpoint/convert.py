"""Convert EMA checkpoints between mmcv 1.x, mmdet 2.x and mmengine 0.x.

No upstream counterpart: OpenMMLab ships no converter between these layouts
(UPSTREAM_NOTES "Migration facts"). Inputs are loaded safely
(:mod:`.safe_load`), validated completely, and only then written atomically
(:mod:`.atomic`), so a failure leaves no output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from . import gan
from .atomic import atomic_save, check_destination
from .errors import CheckpointError
from .formats import EMACheckpoint, parse
from .safe_load import load
from .writers import to_legacy, to_mmengine

__all__ = ['read', 'convert', 'Result', 'TARGETS']

TARGETS = ('mmcv', 'mmdet', 'mmengine', 'mmedit', 'mmagic')


@dataclass
class Result:
    """What a conversion wrote and why: the evidence for every decision, and any losses."""

    src: Path
    dst: Path
    source: str
    target: str
    evidence: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable lines: source -> destination, then evidence and notes."""
        lines = [f'{self.src} ({self.source}) -> {self.dst} ({self.target})']
        lines += [f'  evidence: {e}' for e in self.evidence]
        lines += [f'  note: {n}' for n in self.notes]
        return '\n'.join(lines)


def read(path, trust: bool = False, model_keys: Optional[Sequence[str]] = None, priority=None,
         by_epoch: Optional[bool] = None) -> EMACheckpoint:
    """Load ``path`` safely and parse it (see :func:`.formats.parse` for the options)."""
    return parse_loaded(load(path, trust=trust), path, model_keys, priority, by_epoch)


def parse_loaded(raw, path, model_keys: Optional[Sequence[str]] = None, priority=None,
                 by_epoch: Optional[bool] = None) -> EMACheckpoint:
    """:func:`read` for a checkpoint already loaded from ``path``."""
    try:
        return parse(raw, model_keys=model_keys, priority=priority,
                     by_epoch=by_epoch, filename=Path(path).name)
    except CheckpointError as exc:
        msg = str(exc)
        if not msg.startswith(str(path)):
            msg = f'{path}: {msg}'
        raise type(exc)(msg) from None


def convert(src, dst, to: str, force: bool = False, model_keys: Optional[Sequence[str]] = None,
            param_keys: Optional[Sequence[str]] = None, source_priority=None,
            target_priority=None, skip_buffers: Optional[bool] = None,
            by_epoch: Optional[bool] = None, trust: bool = False,
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
    'mmedit' / 'mmagic': the GAN family (:mod:`.gan`; ``ema_config``: write mmagic
    ``BaseGAN(ema_config=...)``'s averaged-model keys instead of the hook's).
    """
    if to not in TARGETS:
        raise CheckpointError(f'unknown target {to!r}; choose one of {TARGETS}')
    src = Path(src)
    dst = check_destination(dst, [src], force)
    raw = load(src, trust=trust)
    layout = gan.detect(raw, src.name)
    if to in ('mmedit', 'mmagic') or layout is not None:
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
    ck = parse_loaded(raw, src, model_keys=model_keys, priority=source_priority,
                      by_epoch=by_epoch)
    try:
        if to == 'mmengine':
            if ck.generation == 'mmengine':
                raise CheckpointError('already an mmengine checkpoint; nothing to convert')
            out = to_mmengine(ck)
        else:
            out = to_legacy(ck, to, priority=target_priority, skip_buffers=skip_buffers,
                            by_epoch=None, param_keys=param_keys)
    except CheckpointError as exc:
        raise CheckpointError(f'{src}: {exc}') from None
    atomic_save(out, dst, [src], force)
    return Result(src, dst, ck.generation, to, ck.evidence, ck.notes)
