"""Atomic, non-clobbering file writes: a temporary file in the destination folder, fsync,
then ``os.replace``.

No upstream counterpart (mmcv and mmengine write checkpoints in place). Used by
every writer in compat_ema (checkpoint conversion, golden files, the harness's
checkpoints, migrated configs), so a failure at any point leaves no partial
output and readers never see a half-written file. The tools that write a file
the user names (checkpoint conversion and export, config migration, schedule
plots) go through :func:`check_output` / :func:`write_new`: an input is never
overwritten (not through a symlink or a hard link either), and an existing
output only with ``force``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional, Type, Union

__all__ = ['write_atomic', 'OutputExists', 'check_output', 'write_new']

PathLike = Union[str, 'os.PathLike[str]']


class OutputExists(FileExistsError):
    """The output is an input file, a directory, or exists and ``force`` was not given."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Union[str, 'os.PathLike[str]'], write: Callable[[BinaryIO], Any],
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


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: PathLike, inputs: Iterable[PathLike] = (), force: bool = False,
                 error: Type[Exception] = OutputExists, parent_must_exist: bool = False) -> Path:
    """Refuse an output that is one of ``inputs`` (also through a link), a directory, or
    exists (unless ``force``); with ``parent_must_exist``, one whose folder is missing.

    Raises ``error`` (:class:`OutputExists` by default; the checkpoint tools pass their
    ``CheckpointError``) with a one-line message naming the path. Returns ``Path(path)``.
    """
    dst = Path(path)
    for src in inputs:
        if _same(Path(src), dst):
            raise error(f'{dst}: the output is the input file {src}; refusing to overwrite the '
                        'input; choose another output')
    if dst.is_dir():
        raise error(f'{dst}: is a directory; give an output file name')
    if parent_must_exist and not dst.parent.exists() and str(dst.parent) not in ('', '.'):
        raise error(f'{dst}: the output directory {dst.parent} does not exist')
    if (dst.exists() or dst.is_symlink()) and not force:
        raise error(f'{dst}: exists; pass force=True / --force to replace it')
    return dst


def write_new(path: PathLike, write: Callable[[BinaryIO], Any], inputs: Iterable[PathLike] = (),
              force: bool = False, error: Type[Exception] = OutputExists,
              make_parents: bool = True) -> Path:
    """:func:`write_atomic` after :func:`check_output`, whose refusals are checked again
    right before the rename (so an input that appeared meanwhile is still never replaced)."""
    inputs = list(inputs)

    def check() -> None:
        check_output(path, inputs, force, error, parent_must_exist=not make_parents)

    check()
    return write_atomic(path, write, before_replace=check, make_parents=make_parents)
