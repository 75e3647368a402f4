"""Atomic file writes: a temporary file in the destination folder, fsync, then ``os.replace``.

No upstream counterpart (mmcv and mmengine write checkpoints in place). Used by
every writer in compat_ema (checkpoint conversion, golden files, the harness's
checkpoints, migrated configs), so a failure at any point leaves no partial
output and readers never see a half-written file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

__all__ = ['write_atomic']


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Union[str, Path], write: Callable[[BinaryIO], None],
                 before_replace: Optional[Callable[[], None]] = None,
                 make_parents: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it over ``path``.

    ``before_replace`` runs right before the rename (for a last check that the
    destination may still be replaced); if it or ``write`` raises, the
    temporary file is removed and ``path`` is untouched. The file gets the
    usual mode (0666 less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path('.')
    if make_parents:
        parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=str(parent))
    except OSError as exc:  # name the file the caller asked for, not the temporary one
        raise _about(exc, path) from None
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if before_replace is not None:
            before_replace()
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _about(exc, path) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _about(exc: OSError, path: Path) -> OSError:
    """``exc`` re-targeted at ``path`` (same type and errno): its message names ``path``."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))
