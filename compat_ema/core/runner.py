"""The runner protocol: everything the EMA hooks read from a runner.

Any training loop can drive compat_ema's hooks by passing an object with these
attributes. The hooks use nothing else, exactly as upstream's hooks do:

========================  ==========================================================
attribute                 used by
========================  ==========================================================
``model``                 every hook's ``before_run`` (unwrapped one level if it is a
                          DataParallel/DDP or a registered wrapper, see
                          :mod:`compat_ema.core.wrappers`)
``iter``                  mmcv ``EMAHook`` and mmdet hooks in ``after_train_iter``
                          (0-based index of the iteration that just finished); mmengine
                          ``EMAHook`` in ``after_train_iter`` when started by iteration
``epoch``                 mmengine ``EMAHook`` when ``begin_epoch > 0``
``max_iters``             mmengine ``EMAHook.before_train`` check
``max_epochs``            mmengine ``EMAHook.before_train`` check (``begin_epoch > 0``)
``_resume``               mmengine ``EMAHook.after_load_checkpoint``
``resume(path)``          mmcv/mmdet hooks' ``before_run`` when ``resume_from`` is set
========================  ==========================================================

Counter conventions are those of the real runners (docs/runner-behaviour.md): in
``after_train_iter`` ``iter`` is the index of the iteration just done; mmcv
calls ``before_train_epoch``/``after_train_epoch`` (the swap points) only in its
epoch-based runner. :class:`SimpleRunner` is the smallest object that satisfies
the protocol, for hand-written loops.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch.nn as nn


@runtime_checkable
class EMARunner(Protocol):
    """Structural type of what EMA hooks read from a runner."""

    model: nn.Module

    @property
    def iter(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    @property
    def max_iters(self) -> int: ...

    @property
    def max_epochs(self) -> int: ...


class SimpleRunner:
    """A minimal runner for hand-written loops.

    Set ``iter``/``epoch`` yourself and call the hook
    methods at the points your loop reaches. ``resume`` is delegated to an
    optional callable.
    """

    def __init__(self, model: nn.Module, max_iters: int = 0, max_epochs: int = 0,
                 resume: bool = False, resume_fn: Optional[Callable[[str], Any]] = None):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.inner_iter = 0
        self.max_iters = max_iters
        self.max_epochs = max_epochs
        self._resume = resume
        self._resume_fn = resume_fn

    def resume(self, path: str) -> Any:
        """mmcv-style ``runner.resume(path)``, as called by the legacy hooks' ``resume_from``."""
        if self._resume_fn is None:
            raise RuntimeError(
                f'resume({path!r}) was called but this SimpleRunner has no resume_fn')
        return self._resume_fn(path)
