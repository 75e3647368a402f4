"""Fakes of mmengine 0.10.7's loops: ``EpochBasedTrainLoop``, ``IterBasedTrainLoop``,
``ValLoop``, ``TestLoop`` (upstream: ``mmengine.runner.loops``).

Part of the mmengine runner harness (:mod:`compat_ema.testing.mmengine_runner`, which
re-exports every name here); see that module for what is reproduced.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional

import torch
import torch.nn as nn

from ..core.checks import require

__all__ = ['EpochBasedTrainLoop', 'IterBasedTrainLoop', 'ValLoop', 'TestLoop']


class _BaseLoop:
    def __init__(self, runner: Any, dataloader: Iterable):
        self._runner = runner
        self.dataloader = dataloader

    @property
    def runner(self) -> Any:  # the harness's mmengine_runner.Runner
        return self._runner


class _TrainLoop(_BaseLoop):
    """What both train loops share: the counters, the validation schedule and one iteration."""

    def __init__(self, runner, dataloader, val_begin: int, val_interval: int):
        super().__init__(runner, dataloader)
        self._max_epochs = 0   # both set by each loop from its own arguments
        self._max_iters = 0
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False

    max_epochs = property(lambda self: self._max_epochs)
    max_iters = property(lambda self: self._max_iters)
    epoch = property(lambda self: self._epoch)
    iter = property(lambda self: self._iter)

    def _validate_after(self, done: int, last: int) -> None:
        """Run the val loop (if any) when ``done`` epochs/iters are at or past ``val_begin`` and
        ``done`` is a multiple of ``val_interval`` or the ``last`` one."""
        if (self.runner.val_loop is not None and done >= self.val_begin
                and (done % self.val_interval == 0 or done == last)):
            self.runner.val_loop.run()

    def _train_iter(self, batch_idx: int, data_batch: Any) -> None:
        self.runner.call_hook('before_train_iter', batch_idx=batch_idx, data_batch=data_batch)
        outputs = self.runner.model.train_step(data_batch, optim_wrapper=self.runner.optim_wrapper)
        self.runner.call_hook('after_train_iter', batch_idx=batch_idx, data_batch=data_batch,
                              outputs=outputs)
        self._iter += 1


class EpochBasedTrainLoop(_TrainLoop):
    """``mmengine.runner.EpochBasedTrainLoop`` (docs/runner-behaviour.md)."""

    def __init__(self, runner, dataloader, max_epochs: int, val_begin: int = 1,
                 val_interval: int = 1):
        super().__init__(runner, dataloader, val_begin, val_interval)
        self._max_epochs = int(max_epochs)
        require(self._max_epochs == max_epochs,
                f'`max_epochs` should be a integer number, but get {max_epochs}.')
        self._max_iters = self._max_epochs * len(self.dataloader)  # type: ignore[arg-type]

    def run(self) -> nn.Module:
        self.runner.call_hook('before_train')
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._validate_after(self._epoch, self._max_epochs)
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx: int, data_batch: Any) -> None:
        self._train_iter(idx, data_batch)


class _InfiniteIterator:
    def __init__(self, dataloader: Iterable):
        self._dataloader = dataloader
        self._iterator = iter(dataloader)
        self._epoch = 0

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader, 'sampler', None)
            if hasattr(sampler, 'set_epoch'):
                sampler.set_epoch(self._epoch)
            self._iterator = iter(self._dataloader)
            return next(self._iterator)


class IterBasedTrainLoop(_TrainLoop):
    """``mmengine.runner.IterBasedTrainLoop`` (docs/runner-behaviour.md)."""

    def __init__(self, runner, dataloader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000):
        super().__init__(runner, dataloader, val_begin, val_interval)
        self._max_iters = int(max_iters)
        require(self._max_iters == max_iters,
                f'`max_iters` should be a integer number, but get {max_iters}')
        self._max_epochs = 1
        self.dataloader_iterator = _InfiniteIterator(self.dataloader)

    def run(self) -> nn.Module:
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        for _ in range(self._iter):  # skip the batches a resumed run already used
            next(self.dataloader_iterator)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._validate_after(self._iter, self._max_iters)
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_iter(self, data_batch: Any) -> None:
        self._train_iter(self._iter, data_batch)


class _EvalLoop(_BaseLoop):
    stage = 'val'

    def __init__(self, runner, dataloader, evaluator: Optional[Callable[[List[Any]], dict]] = None):
        super().__init__(runner, dataloader)
        self.evaluator = evaluator

    def run(self) -> dict:
        s = self.stage
        self.runner.call_hook(f'before_{s}')
        self.runner.call_hook(f'before_{s}_epoch')
        self.runner.model.eval()
        outputs_all: List[Any] = []
        for idx, data_batch in enumerate(self.dataloader):
            outputs_all.append(self.run_iter(idx, data_batch))
        metrics = dict(self.evaluator(outputs_all)) if self.evaluator is not None else {}
        self.runner.call_hook(f'after_{s}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{s}')
        return metrics

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch: Any) -> Any:
        s = self.stage
        self.runner.call_hook(f'before_{s}_iter', batch_idx=idx, data_batch=data_batch)
        outputs = getattr(self.runner.model, f'{s}_step')(data_batch)
        self.runner.call_hook(f'after_{s}_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)
        return outputs


class ValLoop(_EvalLoop):
    """``mmengine.runner.ValLoop``; ``evaluator(outputs_list) -> metrics`` or None (empty metrics)."""

    stage = 'val'


class TestLoop(_EvalLoop):
    """``mmengine.runner.TestLoop``; calls ``model.test_step``."""

    stage = 'test'
