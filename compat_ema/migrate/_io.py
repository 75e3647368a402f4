"""Atomic, non-clobbering writes for the migration tools.

A temp file in the destination directory, fsync, then ``os.replace``: a reader
never sees a half-written file and a failure leaves nothing behind.
"""
from __future__ import annotations

import os
import tempfile
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
    """Write ``data`` to ``path`` atomically (see :func:`check_output` for the refusals)."""
    check_output(path, force=force, inputs=inputs)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=directory)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str, text: str, force: bool = False,
                      inputs: Iterable[str] = (), encoding: Optional[str] = 'utf-8') -> str:
    """:func:`atomic_write_bytes` for text."""
    return atomic_write_bytes(path, text.encode(encoding or 'utf-8'), force=force, inputs=inputs)
