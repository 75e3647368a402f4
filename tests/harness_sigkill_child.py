"""Child process of tests/test_harness_sigkill.py (not a test module).

``train-mmcv WORK_DIR`` / ``train-engine WORK_DIR``: train with the real compat
hooks in the harness; right after the first checkpoint is on disk, print
``CHECKPOINT-WRITTEN`` and wait to be killed with SIGKILL.
``resume MMCV_DIR ENGINE_DIR OUT``: a fresh process (started early so that its
imports overlap the training, it waits for ``GO`` on stdin, sent after the
kills) resumes both runs from what the killed processes left and saves the
final tensors and traces to OUT.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings

import torch

torch.set_num_threads(1)
logging.disable(logging.WARNING)
warnings.simplefilter('ignore')

from compat_ema.mmcv.runner.hooks.hook import Hook as MMCVHook  # noqa: E402
from compat_ema.mmengine.hooks.hook import Hook as EngineHook  # noqa: E402
from compat_ema.testing.scenario import run_scenario  # noqa: E402

MMCV = dict(framework='mmcv', runner='epoch', max_epochs=3, workflow=[('train', 1), ('val', 1)],
            hooks=[dict(type='ExpMomentumEMAHook', momentum=0.3, total_iter=5, priority=49)])
ENGINE = dict(framework='mmengine', runner='iter', max_iters=6, val_interval=2,
              checkpoint=dict(interval=2, by_epoch=False),
              hooks=[dict(type='EMAHook', momentum=0.5)])


def _stall() -> None:
    print('CHECKPOINT-WRITTEN', flush=True)
    time.sleep(300)
    os._exit(3)  # never reached when the parent kills us


class StallMMCV(MMCVHook):
    """LOWEST priority: runs after CheckpointHook has written epoch_1.pth."""

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == 1:
            _stall()


class StallEngine(EngineHook):
    """LOWEST priority: runs after CheckpointHook has written iter_2.pth."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == 2:
            _stall()


def main(argv):
    mode = argv[0]
    if mode == 'train-mmcv':
        cfg = dict(MMCV, hooks=MMCV['hooks'] + [dict(type=StallMMCV, priority='LOWEST')])
        run_scenario(work_dir=argv[1], **cfg)
    elif mode == 'train-engine':
        cfg = dict(ENGINE, hooks=ENGINE['hooks'] + [dict(type=StallEngine, priority='LOWEST')])
        run_scenario(work_dir=argv[1], **cfg)
    elif mode == 'resume':
        mmcv_dir, engine_dir, out = argv[1:4]
        print('READY', flush=True)
        if sys.stdin.readline().strip() != 'GO':  # started early; waits for the kills
            raise SystemExit('parent did not say GO')
        last = os.path.join(mmcv_dir, os.readlink(os.path.join(mmcv_dir, 'latest.pth')))
        # mmdet's recommended path: the hook's resume_from, in the same work_dir
        hook = run_scenario(work_dir=mmcv_dir, resume=dict(how='hook', checkpoint=last), **MMCV)
        # train_detector's cfg.resume_from alone: runner.resume before run
        runner = run_scenario(work_dir=mmcv_dir + '-runner', resume=dict(how='runner', checkpoint=last),
                              **MMCV)
        # mmengine resume=True: auto-resume from work_dir/last_checkpoint
        engine = run_scenario(work_dir=engine_dir, resume=dict(how='auto'), **ENGINE)
        torch.save(dict(last=os.path.basename(last), hook=hook.final, runner=runner.final,
                        runner_trace=runner.trace.as_lists(), engine=engine.final,
                        engine_ema=engine.ema,
                        engine_trace=engine.trace.as_lists()), out)
    else:
        raise SystemExit(f'unknown mode {mode!r}')


if __name__ == '__main__':
    main(sys.argv[1:])
