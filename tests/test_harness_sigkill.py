"""A training process killed with SIGKILL mid-training, resumed by a fresh process.

The child (tests/harness_sigkill_child.py) trains with the real compat hooks in
the harness and is killed right after its first checkpoint is written; a new
process resumes from what is on disk. The result must equal the uninterrupted
run bit for bit where upstream's semantics allow it (mmdet hook at priority 49
resumed through the hook's ``resume_from``; mmengine ``resume=True``), and show
the documented difference where they do not (runner-level ``resume_from``
alone, docs/runner-behaviour.md#resume-matrix: the ``ema_*`` keys are dropped and the EMA restarts
from the loaded weights, which are the EMA weights at priority 49).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from compat_ema.testing.scenario import run_scenario, single_thread
from compat_ema.testing.trace import hexf

CHILD = Path(__file__).resolve().parent / 'harness_sigkill_child.py'
sys.path.insert(0, str(CHILD.parent))
import harness_sigkill_child as child  # noqa: E402
from helpers import resume_comparable  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL (POSIX)')


def _spawn(*args):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _kill_after_checkpoint(proc):
    ready, _, _ = select.select([proc.stdout], [], [], 240)
    line = proc.stdout.readline() if ready else ''
    if line.strip() != 'CHECKPOINT-WRITTEN':
        proc.kill()
        raise AssertionError(f'child did not reach its checkpoint: {line!r} {proc.stderr.read()}')
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _equal(a, b):
    a, b = resume_comparable(a), resume_comparable(b)   # torch 1.8-1.10: BN counters aside
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_mid_training_then_resume_in_a_fresh_process(tmp_path):
    mmcv_dir, engine_dir, out = tmp_path / 'mmcv', tmp_path / 'engine', tmp_path / 'out.pth'
    procs = [_spawn('train-mmcv', str(mmcv_dir)), _spawn('train-engine', str(engine_dir))]
    resumer = subprocess.Popen([sys.executable, str(CHILD), 'resume', str(mmcv_dir), str(engine_dir),
                                str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # the uninterrupted runs, computed here while the children start
    logging.disable(logging.WARNING)
    try:
        with single_thread(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            full_mmcv = run_scenario(work_dir=str(tmp_path / 'full_mmcv'), **child.MMCV)
            full_engine = run_scenario(work_dir=str(tmp_path / 'full_engine'), **child.ENGINE)
    finally:
        logging.disable(logging.NOTSET)
    for proc in procs:
        _kill_after_checkpoint(proc)
    # killed mid-training: only the first checkpoint exists
    assert sorted(p.name for p in mmcv_dir.glob('*.pth')) == ['epoch_1.pth', 'latest.pth']
    assert sorted(p.name for p in engine_dir.glob('*.pth')) == ['iter_2.pth']
    ready, _, _ = select.select([resumer.stdout], [], [], 300)  # never block the suite
    if not ready:
        resumer.kill()
        raise AssertionError('the resuming child did not get ready in 300 s')
    assert resumer.stdout.readline().strip() == 'READY'
    stdout, stderr = resumer.communicate('GO\n', timeout=300)
    assert resumer.returncode == 0, stderr[-3000:]
    got = torch.load(out)


    # allowed by upstream: bit-for-bit equal, EMA buffers included
    assert got['last'] == 'epoch_1.pth'
    assert _equal(got['hook'], full_mmcv.final)
    assert _equal(got['engine'], full_engine.final) and _equal(got['engine_ema'], full_engine.ema)
    engine_start = [r for r in got['engine_trace'] if r[0] == 'hi' and r[1] == 'before_train'][0]
    assert engine_start[3] == 2   # resumed at iter 2, exactly as saved

    # documented difference (docs/runner-behaviour.md#resume-matrix, priority 49 + runner-level
    # resume only):
    # at before_run the ema_* buffers are clones of the loaded weights, i.e. the EMA
    saved = torch.load(mmcv_dir / 'epoch_1.pth')['state_dict']
    lo_start = [r for r in got['runner_trace'] if r[0] == 'lo' and r[1] == 'before_run'][0]
    assert lo_start[6] == lo_start[7] == hexf(saved['fc.weight'][0, 0])
    assert hexf(saved['ema_fc_weight'][0, 0]) != lo_start[6]   # the raw weights were lost
    assert not torch.equal(got['runner']['fc.weight'], full_mmcv.final['fc.weight'])
    assert not torch.equal(got['runner']['ema_fc_weight'], full_mmcv.final['ema_fc_weight'])
