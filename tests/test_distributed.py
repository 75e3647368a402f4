"""Real torch.distributed tests: 2 gloo processes on CPU, DDP and FSDP2 (fully_shard).

The worker (tests/dist_worker.py) runs as 2 subprocesses joined through
``env://`` on a free localhost port. Every launch has two guards: the workers'
``init_process_group(timeout=...)`` and a parent-side deadline after which all
ranks are killed and the test fails naming itself (``launch``).

Expected values come from outside the code under test where possible: rank
equality is checked between independent processes, the EMA is replayed from
the recorded parameter trajectory through a float64 formula, and the resumed
run is compared with the uninterrupted one.
"""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from dist_worker import GENERATIONS, ITERS, fsdp2_available
from helpers import resume_comparable

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason='torch.distributed with gloo is not available')

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dist_worker.py')
DEADLINE = float(os.environ.get('COMPAT_EMA_DIST_DEADLINE', '120'))


class HungProcessGroup(RuntimeError):
    """A spawned process group did not finish before its deadline."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(scenario: str, out_dir: str, test_name: str, world: int = 2, ranks=None,
           deadline: float = DEADLINE, group_timeout: float = 60.0):
    """Run ``ranks`` (default: all) of a ``world``-rank group; return each rank's result.

    Raises HungProcessGroup (after killing every rank) when the group is not
    done within ``deadline`` seconds, and RuntimeError with the rank's output
    when a rank fails.
    """
    port = str(free_port())
    env = dict(os.environ, COMPAT_EMA_DIST_TIMEOUT=str(group_timeout), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(WORKER),
                                                        os.environ.get('PYTHONPATH')])))
    procs = []
    for rank in (range(world) if ranks is None else ranks):
        log = open(os.path.join(out_dir, f'rank{rank}.log'), 'w+')
        procs.append((rank, log, subprocess.Popen(
            [sys.executable, WORKER, scenario, str(rank), str(world), port, out_dir],
            stdout=log, stderr=subprocess.STDOUT, env=env)))
    end = time.monotonic() + deadline
    try:
        # poll every rank: the first failure kills the others at once (a rank left waiting in a
        # collective would otherwise sit out its whole gloo timeout)
        first_failed = []  # ranks in the order their failure was seen: the root cause first
        while any(proc.poll() is None for _, _, proc in procs):
            first_failed += [r for r, _, p in procs
                             if p.poll() not in (None, 0) and r not in first_failed]
            if first_failed:
                break
            if time.monotonic() > end:
                rank = next(r for r, _, p in procs if p.poll() is None)
                raise HungProcessGroup(
                    f'{test_name}: the {scenario!r} process group (world size {world}) hung: '
                    f'rank {rank} was still running after {deadline:.0f} s; all ranks killed')
            time.sleep(0.05)
        grace = time.monotonic() + 3.0  # let the others' own errors surface before the kill
        while first_failed and time.monotonic() < grace and \
                any(p.poll() is None for _, _, p in procs):
            time.sleep(0.05)
        first_failed += [r for r, _, p in procs if p.poll() not in (None, 0)
                         and r not in first_failed]
        if first_failed:
            parts = []
            for rank in first_failed:
                log, proc = next((log, p) for r, log, p in procs if r == rank)
                log.seek(0)
                parts.append(f'--- rank {rank} (exit {proc.returncode}):\n{log.read()[-3000:]}')
            raise RuntimeError(f'{test_name}: {scenario!r} failed on rank(s) {first_failed} '
                               '(in the order seen; the others were killed):\n' + '\n'.join(parts))
    finally:
        for _, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return [torch.load(os.path.join(out_dir, f'rank{r}.pt'), map_location='cpu')
            for r, _, _ in procs]


@pytest.fixture(scope='module')
def dist_results(tmp_path_factory):
    """One 2-rank launch running the DDP scenarios, then FSDP2 where available."""
    out = str(tmp_path_factory.mktemp('dist'))
    return launch('all', out, 'test_distributed.py::dist_results')


@pytest.fixture(scope='module')
def ddp_results(dist_results):
    return [r['ddp'] for r in dist_results]


def _assert_dicts_equal(a: dict, b: dict, what: str) -> None:
    assert list(a) == list(b), what
    for k in a:
        assert torch.equal(a[k], b[k]), f'{what}: {k} differs'


PARAM_KEYS = ('fc1.weight', 'fc1.bias', 'bn.weight', 'bn.bias', 'fc2.weight', 'fc2.bias')


def _param_entries(name: str, state: dict) -> dict:
    """The EMA entries that average parameters (identical on every rank under DDP)."""
    if GENERATIONS[name][0] == 'mmengine':
        return {k: v for k, v in state.items() if k[len('module.'):] in PARAM_KEYS}
    return {k: v for k, v in state.items()
            if k in {'ema_' + p.replace('.', '_') for p in PARAM_KEYS}}


@pytest.mark.parametrize('name', list(GENERATIONS))
def test_ema_of_parameters_equal_on_every_rank(ddp_results, name):
    r0, r1 = (r[name]['full'] for r in ddp_results)
    assert r0['losses'] != r1['losses']  # the ranks saw different data
    _assert_dicts_equal(_param_entries(name, r0['ema']), _param_entries(name, r1['ema']),
                        f'{name}: EMA of parameters rank 0 vs rank 1')
    assert len(_param_entries(name, r0['ema'])) == len(PARAM_KEYS)
    for k in PARAM_KEYS:
        assert torch.equal(r0['final'][k], r1['final'][k]), k


@pytest.mark.parametrize('name', ['mmdet_exp', 'mmengine_ema'])
def test_buffer_entries_are_per_rank_under_plain_batchnorm(ddp_results, name):
    """BatchNorm running stats are rank-local after each forward (DDP broadcasts rank 0's
    at the start of the next one), so EMA entries fed by buffers are per rank, as upstream's
    are; each equals its own rank's running statistics history."""
    r0, r1 = (r[name]['full'] for r in ddp_results)
    key = 'ema_bn_running_mean' if name == 'mmdet_exp' else 'module.bn.running_mean'
    assert not torch.equal(r0['ema'][key], r1['ema'][key])
    if name == 'mmengine_ema':  # update_buffers=False copies the rank's buffers each update
        for r in (r0, r1):
            assert torch.equal(r['ema'][key], r['snapshots'][-1]['bn.running_mean'])


def _mmcv_momentum(name: str, t: int):
    """Per-iteration momentum (None: no update) from the upstream formulas, written out."""
    if name == 'mmcv':
        return min(0.2 ** 2, (1 + t) / (3 + t)) if t % 2 == 0 else None
    if name == 'mmdet_base':
        return 0.2
    if name == 'mmdet_exp':
        return (1 - 0.2) * math.exp(-(1 + t) / 5) + 0.2
    return min(0.2 ** 2, (1 + t) / (3 + t)) if (t + 1) % 2 == 0 else None


@pytest.mark.parametrize('name', list(GENERATIONS))
def test_ema_matches_float64_replay_of_the_rank_trajectory(ddp_results, name):
    """Replay each rank's recorded post-step parameters through an independent float64 EMA."""
    torch.manual_seed(0)
    from dist_worker import Net
    init = Net().state_dict()
    for rank, res in enumerate(r[name]['full'] for r in ddp_results):
        for p in PARAM_KEYS:
            e = init[p].double()
            seen = 0
            for t, snap in enumerate(res['snapshots']):
                v = snap[p].double()
                if name.startswith('mm') and GENERATIONS[name][0] != 'mmengine':
                    m = _mmcv_momentum(name, t)
                    if m is not None:
                        e = (1 - m) * e + m * v
                    continue
                if seen == 0:  # mmengine: first update_parameters copies
                    e = v
                elif name == 'mmengine_ema':
                    e = e + 0.2 * (v - e)
                elif name == 'mmengine_anneal':
                    e = e + max(0.1, 3 / (3 + seen)) * (v - e)
                elif seen % 2 == 0:  # SWA, interval 2
                    e = e + (v - e) / (seen // 2 + 1)
                seen += 1
            # mmcv/mmdet end with the EMA swapped into the model (after_train_epoch)
            got = (res['ema']['module.' + p] if GENERATIONS[name][0] == 'mmengine'
                   else res['final'][p])
            torch.testing.assert_close(got.double(), e, rtol=2e-6, atol=2e-7,
                                       msg=f'{name} rank {rank} {p}')


@pytest.mark.parametrize('name', list(GENERATIONS))
def test_checkpoint_from_rank0_resumes_on_both_ranks(ddp_results, name):
    """Both ranks load rank 0's file and finish bitwise where the uninterrupted run did.

    Rank 0 matches in every entry. Rank 1 matches in every parameter-derived entry and
    weight; its BatchNorm statistics (and the EMA entries fed by them) restart from rank 0's,
    because the file holds rank 0's buffers: the same as upstream's rank-0 checkpoints.
    """
    full, resumed = ddp_results[0][name]['full'], ddp_results[0][name]['resumed']
    # torch 1.8-1.10: BatchNorm counters aside (helpers.resume_comparable)
    _assert_dicts_equal(resume_comparable(full['ema']), resume_comparable(resumed['ema']),
                        f'{name} rank 0: EMA after resume')
    _assert_dicts_equal(resume_comparable(full['final']), resume_comparable(resumed['final']),
                        f'{name} rank 0: weights after resume')
    assert len(resumed['snapshots']) == ITERS  # only epoch 2 was trained again
    full, resumed = ddp_results[1][name]['full'], ddp_results[1][name]['resumed']
    _assert_dicts_equal(_param_entries(name, full['ema']), _param_entries(name, resumed['ema']),
                        f'{name} rank 1: EMA of parameters after resume')
    for k in PARAM_KEYS:
        assert torch.equal(full['final'][k], resumed['final'][k]), k
    if 'steps' in full['ema']:
        assert int(full['ema']['steps']) == int(resumed['ema']['steps']) == 2 * ITERS
    _assert_dicts_equal(_param_entries(name, ddp_results[0][name]['resumed']['ema']),
                        _param_entries(name, ddp_results[1][name]['resumed']['ema']),
                        f'{name}: resumed EMA rank 0 vs rank 1')


@pytest.mark.parametrize('name', list(GENERATIONS))
def test_swaps_keep_ddp_gradient_sync(ddp_results, name):
    """After swap-in and swap-back, gradients are still all-reduced: equal on both ranks
    although each rank's loss (its own data) differs."""
    r0, r1 = (r[name]['full'] for r in ddp_results)
    swaps = [e for e in r0['events'] if e[0] in ('after_train_epoch', 'val')]
    assert swaps and swaps[0][1] == ITERS
    for t in range(ITERS, 2 * ITERS):  # the steps after the first swap pair
        assert r0['losses'][t] != r1['losses'][t]
        for g0, g1 in zip(r0['grads'][t], r1['grads'][t]):
            assert torch.equal(g0, g1), f'{name}: gradients differ across ranks at step {t}'
    for k in PARAM_KEYS:
        assert torch.equal(r0['snapshots'][-1][k], r1['snapshots'][-1][k])
    if GENERATIONS[name][0] == 'mmengine':  # validation saw the EMA weights, not the raw ones
        ema_epoch1 = r0['val_weights']
        assert not torch.equal(ema_epoch1['fc1.weight'], r0['snapshots'][-1]['fc1.weight'])
    else:  # mmcv/mmdet leave the EMA weights in the model after the last epoch
        assert torch.equal(r0['final']['fc1.weight'], r0['ema']['ema_fc1_weight']) is False
        assert torch.equal(r0['ema']['ema_fc1_weight'], r0['snapshots'][-1]['fc1.weight'])


def test_hung_process_group_fails_fast_with_a_clear_message(tmp_path):
    """Rank 1 never starts: rank 0 would wait in init_process_group; the guard kills it."""
    start = time.monotonic()
    with pytest.raises(HungProcessGroup, match=r'test_hung_process_group.*hung.*rank 0.*killed'):
        launch('ddp', str(tmp_path), 'test_hung_process_group_fails_fast', ranks=[0],
               deadline=4, group_timeout=60)
    assert time.monotonic() - start < 15


def test_a_failing_rank_stops_the_group_at_once(tmp_path):
    """Rank 1 raises; rank 0, waiting for it in a barrier, is killed instead of sitting out
    the 60 s gloo timeout, and the error names the rank and shows its traceback."""
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r'(?s)test_a_failing_rank.*--- rank 1 \(exit 1\).*deliberate failure on rank 1'):
        launch('crash', str(tmp_path), 'test_a_failing_rank_stops_the_group', group_timeout=60)
    assert time.monotonic() - start < 45


@pytest.fixture(scope='module')
def fsdp2_results(dist_results):
    if not fsdp2_available():
        pytest.skip(f'torch {torch.__version__}: no FSDP2 (fully_shard) usable on the CPU')
    return [r['fsdp2'] for r in dist_results]


def test_fsdp2_each_rank_averages_only_its_shards(fsdp2_results):
    r0, r1 = fsdp2_results
    torch.manual_seed(0)
    from dist_worker import Net
    full_numel = [p.numel() for p in Net().parameters()]
    assert [a + b for a, b in zip(r0['local_numel'], r1['local_numel'])] == full_numel
    assert any(a < n for a, n in zip(r0['local_numel'], full_numel))


def test_fsdp2_gathered_ema_equals_unsharded_ema_bitwise(fsdp2_results):
    for rank, r in enumerate(fsdp2_results):
        for name, g, u in zip(r['names'], r['gathered_mul_add'], r['unsharded_mul_add']):
            assert torch.equal(g, u), f'rank {rank}: {name}'
    for g0, g1 in zip(fsdp2_results[0]['gathered_mul_add'], fsdp2_results[1]['gathered_mul_add']):
        assert torch.equal(g0, g1)


def test_fsdp2_averaged_model_on_sharded_copy(fsdp2_results):
    """compat_ema's ExponentialMovingAverage on a copy sharded like the model: a gathered
    EMA equal to the float64 lerp replay of the full parameters (first update copies)."""
    r = fsdp2_results[0]
    assert r['averaged_is_dtensor'] and r['steps'] == len(r['full_params'])
    for i, name in enumerate(r['names']):
        e = r['full_params'][0][i].double()
        for params in r['full_params'][1:]:
            e = e + 0.2 * (params[i].double() - e)
        torch.testing.assert_close(r['gathered_lerp'][i].double(), e, rtol=2e-6, atol=2e-7,
                                   msg=name)
    for a, b in zip(fsdp2_results[0]['gathered_lerp'], fsdp2_results[1]['gathered_lerp']):
        assert torch.equal(a, b)
