"""Errors raised by ``compat_ema.checkpoint`` (no upstream counterpart).

Every error message names the file or key at fault in one line, so the CLI can
print it without a traceback.
"""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be read, understood or written as asked."""


class UnsafeCheckpointError(CheckpointError):
    """The file references code outside the allowlist; it was not run.

    ``refused`` lists the refused ``module.name`` references.
    """

    def __init__(self, message: str, refused=()):
        super().__init__(message)
        self.refused = list(refused)
