"""The harness reproduces, bit for bit, the hook-call traces recorded from the REAL runners.

``reference/traces/*.json`` were written by ``reference/gen_traces.py`` with the
real mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 runners and hooks (oracle env).
For each scenario the harness runs the same spec with compat_ema's hooks and
must produce the same hook order, the same trace rows (method, counters,
fc.weight[0,0] of the model and of the EMA copy as float.hex, BN counters),
the same checkpoint files (keys, meta, sha256 of every tensor) and the same
final tensors.

The floats of a trace come from real training (forward, backward, SGD), whose
last bits are the machine's (GEMM kernels, thread count): they are compared
bitwise only where the recording's environment fingerprint has the running
training key (``compat_ema.testing.environment.training_key``). Everywhere
else the EMA *behaviour* is compared exactly: hook order, counters, keys, and
the identity pattern of every float and digest (which values are equal to
which: an update gives a new value, a swap exchanges two, a copy repeats one,
an idle call keeps it), so a gating, interval or swap-point change still fails
on any CPU; the EMA arithmetic itself is pinned bitwise by the golden
trajectories (tests/test_golden_trajectories.py).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

from compat_ema.testing import environment
from compat_ema.testing.scenario import run_spec

from helpers import BN_COUNTS_IN_PLACE  # noqa: E402

REF = Path(__file__).resolve().parent.parent / 'reference'
#: torch 1.8-1.10 rebinds BatchNorm's counter (helpers.BN_COUNTS_IN_PLACE), which changes what
#: the legacy hooks do with it: those torch versions replay the traces recorded from the real
#: runners on torch 1.8.1 (reference/torch18/traces), the others the torch 2.13.0 ones
TRACES = REF / 'traces' if BN_COUNTS_IN_PLACE else REF / 'torch18' / 'traces'
FILES = sorted(TRACES.glob('*.json'))

pytestmark = [pytest.mark.filterwarnings('ignore::compat_ema.testing.mmcv_runner.EMASetupWarning'),
              pytest.mark.golden]  # re-run by .ci/run under other CPU/BLAS/thread settings


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_every_scenario_is_recorded():
    names = {p.stem for p in FILES}
    assert len(names) >= 45
    # the tables of docs/runner-behaviour.md: workflows, priorities, resume paths, intervals,
    # buffers, begin, val, test
    for needed in ('mmcv_epoch_train_p49', 'mmdet_epoch_train2val_p49', 'mmdet_epoch_valtrain_p49',
                   'mmdet_epoch_skip0_normal', 'mmdet_epoch_skip1_p49', 'mmcv_epoch_interval3',
                   'mmdet_epoch_ckpt_interval3', 'mmdet_epoch_resume_hook_p49',
                   'mmdet_epoch_resume_runner_normal', 'mmdet_iter_resume_runner_cpu',
                   'mmengine_epoch_update_buffers', 'mmengine_epoch_begin_iter3',
                   'mmengine_epoch_begin_epoch2', 'mmengine_epoch_val_interval2',
                   'mmengine_epoch_test_after_train', 'mmengine_iter_resume', 'mmengine_test_load'):
        assert needed in names
    assert sum(p.stat().st_size for p in FILES) < 1_000_000


def test_recorded_traces_show_upstream_facts():
    """Sanity of the recordings themselves against docs/runner-behaviour.md (not against the
    harness)."""
    TRACES = REF / 'traces'   # noqa: N806 (the torch 2.13.0 recording)
    rec = json.loads((TRACES / 'mmcv_iter_train_normal.json').read_text())['phases']['full']
    methods = {row[1] for row in rec['trace']}
    # docs/runner-behaviour.md#mmcv-iter-runner
    assert 'before_epoch' in methods and 'before_train_epoch' not in methods
    lo_iters = [(r[3], r[4]) for r in rec['trace'] if r[0] == 'lo' and r[1] == 'before_train_iter']
    assert lo_iters[3] == (3, 0) and lo_iters[4] == (4, 1)                     # epoch lags by one
    # docs/runner-behaviour.md#mmcv-checkpoint: completed-1
    assert rec['checkpoints']['iter_2.pth']['meta'] == {'epoch': 1, 'iter': 1}
    rec = json.loads((TRACES / 'mmcv_epoch_trainval_normal.json').read_text())['phases']['full']
    assert [h[0] for h in rec['hooks']][1:4] == ['OptimizerHook', 'CheckpointHook', 'EMAHook']
    assert rec['checkpoints']['epoch_2.pth']['meta'] == {'epoch': 2, 'iter': 6, 'last_ckpt': 'epoch_1.pth'}
    sd = list(rec['checkpoints']['epoch_1.pth']['state_dict'])
    assert sd[:4] == ['ema_fc_weight', 'ema_fc_bias', 'ema_bn_weight', 'ema_bn_bias']
    rec = json.loads((TRACES / 'mmdet_iter_resume_hook.json').read_text())['phases']['resumed']
    # docs/runner-behaviour.md#mmcv-resume
    assert rec['error'] == 'AssertionError: Torch not compiled with CUDA enabled'


def _recorded_torch() -> str:
    if not BN_COUNTS_IN_PLACE:
        record = json.loads((TRACES.parent / 'RECORDED.json').read_text())
        return record['environment']['torch'].split('+')[0]
    manifest = TRACES.parent / 'MANIFEST.json'
    return json.loads(manifest.read_text())['torch'].split('+')[0] if manifest.is_file() else '2.13.0'


def test_the_two_recordings_differ_only_where_torch_did():
    """The torch 1.8.1 and 2.13.0 traces of the real runners have the same structure except
    the BatchNorm counters around mmdet's hooks (they track ``model.state_dict()`` tensors,
    which torch 1.8-1.10 BatchNorm replaces; mmcv's EMAHook averages parameters only)."""
    new, old = REF / 'traces', REF / 'torch18' / 'traces'
    assert {p.name for p in new.glob('*.json')} == {p.name for p in old.glob('*.json')}
    differ = set()
    for p in sorted(new.glob('*.json')):
        a, b = json.loads(p.read_text()), json.loads((old / p.name).read_text())
        assert a['spec'] == b['spec'], p.name
        for phase in a['phases']:
            sa, sb = _structure(a['phases'][phase]), _structure(b['phases'][phase])
            assert sa['hooks'] == sb['hooks'] and sa['checkpoints'].keys() == sb['checkpoints'].keys()
            rows_a = [r[:6] for r in sa['trace']]
            assert rows_a == [r[:6] for r in sb['trace']], p.name
            if [r[6:8] for r in sa['trace']] != [r[6:8] for r in sb['trace']]:
                differ.add(p.stem.split('_')[0])
    assert differ == {'mmdet'}   # mmcv: parameters only; mmengine re-reads state dicts


#: float results (BatchNorm forward/backward) differ between torch releases: the recorded
#: floats and digests are compared bit for bit on the torch that recorded them; on other
#: releases (tox envs py311-torch1.13.1, py311-torch2.6.0) the call structure and integer counters are.
SAME_TORCH = torch.__version__.split('+')[0] == _recorded_torch()

_ROW_INTS = (0, 1, 2, 3, 4, 5, 8, 9, 11)   # rec, method, mode, iter, epoch, inner, nbt, ema_nbt, steps


def _structure(phase: dict) -> dict:
    """The parts of a record that do not depend on float arithmetic."""
    rows = [[r[i] for i in _ROW_INTS] + [None if r[12] is None else r[12].get('keys')]
            for r in phase['trace']]
    ckpts = {name: dict(keys=c['keys'], meta=c['meta'], state_dict=list(c['state_dict']),
                        ema_state_dict=list(c.get('ema_state_dict', {})),
                        optimizer={k: list(v) for k, v in c.get('optimizer', {}).items()})
             for name, c in phase['checkpoints'].items()}
    return dict(hooks=phase['hooks'], error=phase['error'], latest=phase['latest'], trace=rows,
                checkpoints=ckpts, final=list(phase['final']['state_dict']))


_VALUE = re.compile(r'^(-?0x[0-9a-f.]+p[+-]?\d+|-?inf|nan|[0-9a-f]{16})$')


def _identity(record: dict) -> dict:
    """``record`` with every float hex and tensor digest replaced by ``v<n>``, n the order of
    first appearance: what stays is which values are equal to which (see module doc)."""
    names: dict = {}

    def walk(x):
        if isinstance(x, str) and _VALUE.match(x):
            return names.setdefault(x, f'v{len(names)}')
        if isinstance(x, dict):  # labels in sorted key order: independent of dict order
            done = {k: walk(x[k]) for k in sorted(x)}
            return {k: done[k] for k in x}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x
    return walk(record)


def _probes(phases: dict) -> dict:
    """Per phase, the float probes of every trace row (``w``, ``ema_w``, ``rm``, the checkpoint
    probe in ``x``) and of the final state. Not the checkpoint digests: a parameter whose gradient
    is zero in exact arithmetic (a bias before BatchNorm) keeps its bits on one machine and
    moves by one ULP on another, and so does an EMA update of an EMA equal to its source."""
    return {name: [[r[6], r[7], r[10], r[12]] for r in p['trace']]
            + [[p['final'].get('w'), p['final'].get('ema_w')]] for name, p in phases.items()}


_NO_CUDA = 'AssertionError: Torch not compiled with CUDA enabled'
#: the same call on a CUDA build without a GPU (the torch 1.8.1+cu102 recording)
_NO_DRIVER = ('RuntimeError: Found no NVIDIA driver on your system. Please check that you have '
              'an NVIDIA GPU and installed a driver from http://www.nvidia.com/Download/index.aspx')


def _cuda_error_here():
    """What ``torch.cuda.current_device()`` raises on this machine (None if it works)."""
    try:
        torch.cuda.current_device()
    except Exception as exc:  # noqa: BLE001
        return f'{type(exc).__name__}: {str(exc).splitlines()[0]}'
    return None


@pytest.mark.parametrize('path', FILES, ids=[p.stem for p in FILES])
def test_harness_reproduces_the_real_runner(path, tmp_path):
    recorded = json.loads(path.read_text())
    cuda_phase = [p for p, r in recorded['phases'].items()
                  if r['error'] in (_NO_CUDA, _NO_DRIVER)]
    if cuda_phase:
        here = _cuda_error_here()
        if here is None:
            pytest.skip('recorded on a CPU-only torch: IterBasedRunner.resume needs CUDA there')
        for p in cuda_phase:  # a CUDA build without a GPU fails in the same call, other words
            recorded['phases'][p]['error'] = here
    rec_env = recorded.get('environment') or {}
    before = torch.get_num_threads()
    torch.set_num_threads(int(rec_env.get('threads') or before))  # as the recording pinned it
    try:
        here = environment.fingerprint()
        got = json.loads(json.dumps(run_spec(recorded['spec'], str(tmp_path))))
    finally:
        torch.set_num_threads(before)
    assert list(got) == list(recorded['phases'])
    same_training = environment.training_key(rec_env) == environment.training_key(here)
    note = '' if same_training else ' (' + environment.environment_note(rec_env, here) + (
        ': training floats compared by identity pattern, EMA behaviour exactly)')
    phases = recorded['phases']
    if SAME_TORCH and not same_training:
        pattern_got, pattern_exp = _identity(_probes(got)), _identity(_probes(phases))
        for phase in phases:
            for i, (a, b) in enumerate(zip(pattern_got[phase], pattern_exp[phase])):
                assert a == b, f'{phase}{note}: probes of trace row {i} differ in identity pattern'
    for phase, exp in phases.items():
        have = got[phase]
        phase = phase + note
        if not SAME_TORCH or not same_training:
            have, exp = _structure(have), _structure(exp)
        assert have['hooks'] == exp['hooks'], phase
        assert have['error'] == exp['error'], phase
        for i, (a, b) in enumerate(zip(have['trace'], exp['trace'])):
            assert a == b, f'{phase}: trace row {i} differs'
        assert len(have['trace']) == len(exp['trace']), phase
        assert have['checkpoints'] == exp['checkpoints'], phase
        assert have['latest'] == exp['latest'], phase
        assert have['final'] == exp['final'], phase
