"""Atomic, non-clobbering writes for the migration tools.

A temp file in the destination directory, fsync, then ``os.replace``: a reader
never sees a half-written file and a failure leaves nothing behind.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

__all__ = ['OutputExists', 'check_output', 'atomic_write_bytes', 'atomic_write_text']


class OutputExists(FileExistsError):
    """The output exists (or is the input) and ``force`` was not given."""


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path: str, force: bool = False, inputs: Iterable[str] = ()) -> None:
    """Refuse to write over an input file ever, or over an existing file without ``force``."""
    for src in inputs:
        if os.path.exists(path) and _same(path, src) or os.path.abspath(path) == os.path.abspath(src):
            raise OutputExists(f'{path}: refusing to overwrite the input file; choose another '
                               'output (-o)')
    if os.path.isdir(path):
        raise OutputExists(f'{path}: is a directory')
    if os.path.exists(path) and not force:
        raise OutputExists(f'{path}: exists; pass --force to overwrite it')


def atomic_write_bytes(path: str, data: bytes, force: bool = False,
                       inputs: Iterable[str] = ()) -> str:
    """Write ``data`` to ``path`` atomically (see :func:`check_output` for the refusals).

    Uses :func:`compat_ema.core.atomic.write_atomic` (temp file in the same
    directory, fsync, rename; the usual file mode); the refusals are checked
    again right before the rename.
    """
    from ..core.atomic import write_atomic
    inputs = list(inputs)
    check_output(path, force=force, inputs=inputs)
    write_atomic(path, lambda fh: fh.write(data),
                 before_replace=lambda: check_output(path, force=force, inputs=inputs))
    return path


def atomic_write_text(path: str, text: str, force: bool = False,
                      inputs: Iterable[str] = (), encoding: Optional[str] = 'utf-8') -> str:
    """:func:`atomic_write_bytes` for text."""
    return atomic_write_bytes(path, text.encode(encoding or 'utf-8'), force=force, inputs=inputs)
