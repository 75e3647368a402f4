"""``mmcv.runner.Hook`` (mmcv 1.6): the base class of mmcv-generation hooks.

Reproduces its forwarding rules: ``before_train_epoch``/``before_val_epoch``
call ``before_epoch``, the ``after_*_epoch`` methods call ``after_epoch``, and
likewise for iterations; every default does nothing. mmcv's IterBasedRunner
calls only ``before_epoch``/``after_epoch``, so hooks that override the
``*_train_epoch`` methods (all EMA hooks) never swap there. The ``every_n_*``
helpers use ``(counter + 1) % n == 0``.

When the real mmcv is installed, :mod:`compat_ema.integrations.mmcv` makes the
hooks instances of the real ``mmcv.runner.Hook`` as well.
"""
from __future__ import annotations


class Hook:
    """Base hook with mmcv 1.6's method names and forwarding."""

    stages = ('before_run', 'before_train_epoch', 'before_train_iter', 'after_train_iter',
              'after_train_epoch', 'before_val_epoch', 'before_val_iter', 'after_val_iter',
              'after_val_epoch', 'after_run')

    def before_run(self, runner):
        pass

    def after_run(self, runner):
        pass

    def before_epoch(self, runner):
        pass

    def after_epoch(self, runner):
        pass

    def before_iter(self, runner):
        pass

    def after_iter(self, runner):
        pass

    def before_train_epoch(self, runner):
        self.before_epoch(runner)

    def before_val_epoch(self, runner):
        self.before_epoch(runner)

    def after_train_epoch(self, runner):
        self.after_epoch(runner)

    def after_val_epoch(self, runner):
        self.after_epoch(runner)

    def before_train_iter(self, runner):
        self.before_iter(runner)

    def before_val_iter(self, runner):
        self.before_iter(runner)

    def after_train_iter(self, runner):
        self.after_iter(runner)

    def after_val_iter(self, runner):
        self.after_iter(runner)

    def every_n_epochs(self, runner, n):
        return (runner.epoch + 1) % n == 0 if n > 0 else False

    def every_n_inner_iters(self, runner, n):
        return (runner.inner_iter + 1) % n == 0 if n > 0 else False

    def every_n_iters(self, runner, n):
        return (runner.iter + 1) % n == 0 if n > 0 else False

    def end_of_epoch(self, runner):
        return runner.inner_iter + 1 == len(runner.data_loader)

    def is_last_epoch(self, runner):
        return runner.epoch + 1 == runner._max_epochs

    def is_last_iter(self, runner):
        return runner.iter + 1 == runner._max_iters
