"""The fast path stays out of parallel regions and behind its feature probe.

* Every op the flat buffer issues covers at most ``GRAIN_SIZE`` (32768, torch's
  ``at::internal::GRAIN_SIZE``) elements, so it runs on the calling thread as upstream's
  per-tensor ops on the same small tensors do; the results are bit for bit the faithful
  loop's on a model whose flat buffer spans many chunks, with chunk boundaries at odd
  offsets, at 1 and 2 threads.
* The private ``torch._C._storage_Use_Count`` is used only when ``probe_use_count`` sees it
  behave; anything else gives the fallback (always copy, nothing flattened), whose results
  are also the faithful loop's.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from compat_ema.core import batching, ownership
from compat_ema.mmcv import EMAHook as MmcvEMAHook
from compat_ema.mmdet.core.hook.ema import ExpMomentumEMAHook
from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage, StochasticWeightAverage
from helpers import fast_path

needs_use_count = pytest.mark.skipif(ownership.USE_COUNT is None,
                                     reason='no storage use counts: the flat buffer never engages')


class Many(nn.Module):
    """``n`` leaves with a 1-D weight and a 2-D bias of odd sizes: a flat buffer of many chunks."""

    def __init__(self, n: int = 200, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for i in range(n):
            leaf = nn.Module()
            leaf.weight = nn.Parameter(torch.randn(1021 + 7 * (i % 5), generator=g))
            leaf.bias = nn.Parameter(torch.randn(3, 11 + i % 3, generator=g))
            self.add_module(f'l{i}', leaf)


class Runner:
    def __init__(self, model):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.max_iters = 10**6
        self._resume = False


def _step(model, t):
    g = torch.Generator().manual_seed(1000 + t)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g), alpha=0.1)


def _bits(sd):
    return {k: v.clone().view(torch.int32) if v.dtype == torch.float32 else v.clone()
            for k, v in sd.items()}


def _hook_run(make, fast):
    model = Many()
    hook = make()
    runner = Runner(model)
    out = []
    with fast_path(fast):
        hook.before_run(runner)
        for t in range(4):
            _step(model, t)
            runner.iter = t
            hook.after_train_iter(runner)
            if t % 2 == 1:
                hook._swap_ema_parameters()
            out.append(_bits(model.state_dict()))
    return out, hook


def _flat_of(hook):
    pairs = hook._ema_pairs()
    return (pairs[1] if isinstance(pairs, tuple) else pairs)._flat   # mmdet: (all, floating)


HOOKS = {'mmcv': lambda: MmcvEMAHook(momentum=0.3, warm_up=2),
         'mmdet': lambda: ExpMomentumEMAHook(momentum=0.01, total_iter=3)}


@needs_use_count
@pytest.mark.parametrize('grain', [32768, 4097], ids=['grain', 'odd-grain'])
@pytest.mark.parametrize('threads', [1, 2], indirect=True)
@pytest.mark.parametrize('name', list(HOOKS))
def test_chunked_flat_buffer_equals_faithful(name, threads, grain, monkeypatch):
    monkeypatch.setattr(batching, 'GRAIN_SIZE', grain)
    fast, hook = _hook_run(HOOKS[name], True)
    faithful, _ = _hook_run(HOOKS[name], False)
    flat = _flat_of(hook)
    assert flat is not None and len(flat.gathers) > 4 and flat.tail_chunks  # it ran, in chunks
    for got, want in zip(fast, faithful):
        assert got.keys() == want.keys()
        for k in got:
            assert torch.equal(got[k], want[k]), k


@needs_use_count
def test_every_flat_op_stays_under_the_grain_size():
    _, hook = _hook_run(HOOKS['mmcv'], True)
    flat = _flat_of(hook)
    sizes = [view.numel() for _, _, view, _ in flat.gathers] + [c.numel() for c in flat.tail_chunks]
    assert sizes and max(sizes) <= batching.GRAIN_SIZE == 32768
    assert sum(sizes) == sum(f.numel() for f in flat.flats)   # the chunks cover every buffer
    assert flat.scratch.numel() <= batching.GRAIN_SIZE * 4


@needs_use_count
@pytest.mark.parametrize('threads', [1, 2], indirect=True)
@pytest.mark.parametrize('cls', [ExponentialMovingAverage, StochasticWeightAverage])
def test_chunked_averaged_model_equals_faithful(cls, threads, monkeypatch):
    monkeypatch.setattr(batching, 'GRAIN_SIZE', 5003)
    runs = []
    for fast in (True, False):
        model = Many()
        ema = cls(model) if cls is StochasticWeightAverage else cls(model, momentum=0.3)
        with fast_path(fast):
            for t in range(4):
                _step(model, t)
                ema.update_parameters(model)
        runs.append((_bits(ema.module.state_dict()), ema))
    (fast_sd, fast_ema), (faithful_sd, _) = runs
    assert fast_ema._compat_plan['avg_floating']._flat is not None
    assert all(torch.equal(fast_sd[k], faithful_sd[k]) for k in fast_sd)


# ----------------------------------------------------------------------------- the probe

def test_probe_accepts_the_real_api_where_it_behaves():
    count, base = ownership.probe_use_count()
    if count is None:
        assert not hasattr(torch._C, '_storage_Use_Count') or os.environ.get('COMPAT_EMA_USE_COUNT')
    else:
        assert base >= 1 and (count, base) == (ownership.USE_COUNT, ownership.BASE_USE)


@pytest.mark.parametrize('api', [
    lambda cdata: 1,                      # counts nothing
    lambda cdata: 1 / 0,                  # raises
    lambda cdata: 'two',                  # not a count
], ids=['constant', 'raises', 'not-int'])
def test_probe_refuses_an_api_that_misbehaves(api):
    assert ownership.probe_use_count(api) == (None, -1)


def test_fallback_without_use_counts_is_faithful_and_never_exchanges():
    """The fallback, in a fresh process (the probe runs at import): fast-path hooks equal the
    faithful loop and no storage moves (no flat buffer, no exchange)."""
    code = '''
import torch, sys
sys.path.insert(0, sys.argv[1])
from compat_ema.core import ownership
assert ownership.USE_COUNT is None and ownership.BASE_USE == -1
from test_fast_path_grain import HOOKS, _hook_run, _flat_of
for name in HOOKS:
    fast, hook = _hook_run(HOOKS[name], True)
    faithful, _ = _hook_run(HOOKS[name], False)
    assert _flat_of(hook) is None
    assert all(torch.equal(a[k], b[k]) for a, b in zip(fast, faithful) for k in a)
print('ok')
'''
    env = dict(os.environ, COMPAT_EMA_USE_COUNT='0')
    res = subprocess.run([sys.executable, '-c', code, os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == 'ok', res.stderr[-2000:]
