"""Atomic checkpoint writes (no upstream counterpart; mmcv/mmengine write in place).

The output is written to a temporary file in the destination directory and
renamed over the destination with ``os.replace`` only once it is complete, so
a failure at any point leaves no partial output. The input is never
overwritten (also not through a symlink or hard link), and an existing output
is replaced only with ``force=True``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from ..core.atomic import write_atomic
from .errors import CheckpointError

__all__ = ['check_destination', 'atomic_save']


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_destination(dst, sources: Iterable = (), force: bool = False) -> Path:
    """Refuse a destination that is an input, a directory, or exists (unless ``force``)."""
    dst = Path(dst)
    for src in sources:
        if _same(Path(src), dst):
            raise CheckpointError(f'{dst}: the output is the input file {src}; refusing to '
                                  'overwrite the input')
    if dst.is_dir():
        raise CheckpointError(f'{dst}: is a directory; give an output file name')
    if not dst.parent.exists() and str(dst.parent) not in ('', '.'):
        raise CheckpointError(f'{dst}: the output directory {dst.parent} does not exist')
    if (dst.exists() or dst.is_symlink()) and not force:
        raise CheckpointError(f'{dst}: exists; pass force=True / --force to replace it')
    return dst


def atomic_save(obj: Any, dst, sources: Iterable = (), force: bool = False) -> Path:
    """``torch.save(obj, dst)`` through a temporary file + ``os.replace``."""
    sources = list(sources)
    dst = check_destination(dst, sources, force)
    # checked again right before the rename: the input must never be replaced
    return write_atomic(dst, lambda f: torch.save(obj, f),
                        before_replace=lambda: check_destination(dst, sources, force),
                        make_parents=False)
