"""The flat buffer of small destinations (``TensorPairs.flatten_small_destinations``)
and the batched copy swap change no bit and nothing another object can see.

The fast mmcv/mmdet update re-points the small CPU ``ema_*`` buffers into one
flat buffer per dtype, scales it with one ``mul_``, gathers 1-D sources with
``cat`` and adds them with one ``add_`` per batch; the swap moves those pairs a
batch at a time. Every test compares against the faithful per-tensor loop
(upstream's ops) and checks that the flat path really ran, so a silent
fallback cannot make a test pass vacuously.
"""
from __future__ import annotations

import io
import random

import pytest
import torch
import torch.nn as nn

from compat_ema.core import flat as flat_mod, kernels, ownership, swap
from helpers import torch_load

WEIGHTS = [0.0002, 0.3, 0.7, 1 / 3, 0.999]

#: The flat buffer re-points a tensor only with a proof that nothing else holds its storage
#: (storage use counts, torch >= 2.0); without one (torch 1.13) everything stays per tensor,
#: which the value tests here still compare, but the tests that check it engaged cannot run.
needs_flat = pytest.mark.skipif(ownership.USE_COUNT is None,
                                reason='no storage use counts in this torch: the flat buffer never engages')


def _pairs(seed, dtype, n=40):
    """Destinations of random sizes (odd ones, not multiples of any vector width), 1-D and
    N-D sources, plus tensors the flat buffer must leave alone: a large one, a bfloat16 one,
    a non-contiguous one, one with a held view."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    shapes = [(rng.randint(1, 300),) for _ in range(n // 2)]
    shapes += [tuple(rng.randint(1, 9) for _ in range(rng.randint(2, 4))) for _ in range(n - len(shapes))]
    shapes += [(1,), (8191,), (33,)]
    rng.shuffle(shapes)
    dst = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    src = [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in shapes]
    dst.append(torch.randn(1 << 13, generator=g, dtype=torch.float64).to(dtype))  # too large
    src.append(nn.Parameter(torch.randn(1 << 13, generator=g, dtype=torch.float64).to(dtype)))
    dst.append(torch.randn(50, generator=g).to(torch.bfloat16))  # not a flat dtype
    src.append(nn.Parameter(torch.randn(50, generator=g).to(torch.bfloat16)))
    dst.append(torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype).t())  # non-contiguous
    src.append(nn.Parameter(torch.randn(4, 6, generator=g, dtype=torch.float64).to(dtype)))
    held = torch.randn(20, generator=g, dtype=torch.float64).to(dtype)  # someone holds a view
    dst.append(held)
    src.append(nn.Parameter(torch.randn(20, generator=g, dtype=torch.float64).to(dtype)))
    return dst, src, held[:5]


def _run(seed, dtype, flatten, fast=True):
    dst, src, view = _pairs(seed, dtype)
    pairs = kernels.TensorPairs(dst, src)
    if flatten:
        pairs.flatten_small_destinations()
    for step, w in enumerate(WEIGHTS):
        pairs.mul_add_(w, fast=fast)
        with torch.no_grad():
            for s in src:
                s.mul_(0.75).add_(0.125 * step)
    return dst, src, view, pairs


@needs_flat
@pytest.mark.parametrize('threads', [1, 2], indirect=True)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=str)
def test_flat_update_equals_the_per_tensor_loop(dtype, threads):
    for seed in range(3):
        fast_dst, _, fast_view, pairs = _run(seed, dtype, flatten=True)
        slow_dst, _, slow_view, _ = _run(seed, dtype, flatten=False, fast=False)
        flat = pairs._flat
        assert flat is not None and len(flat.dst) >= 40 and flat.gathers and flat.tail[0]  # it ran
        for i, (a, b) in enumerate(zip(fast_dst, slow_dst)):
            assert a.shape == b.shape and a.stride() == b.stride(), i
            assert torch.equal(a, b), f'{dtype} threads={threads} seed={seed}: tensor {i} differs'
        assert torch.equal(fast_view, slow_view)  # the held view saw the updates in place


@needs_flat
def test_only_plain_small_exclusive_float_destinations_are_adopted():
    dst, src, view = _pairs(7, torch.float32)
    pairs = kernels.TensorPairs(dst, src).flatten_small_destinations()
    ptrs = [d.data_ptr() for d in dst]
    pairs.mul_add_(0.5)
    adopted = {id(d) for d in pairs._flat.dst}
    big, bf16, noncontig, held = dst[-4:]
    for t in (big, bf16, noncontig, held):
        assert id(t) not in adopted
    assert view.data_ptr() == held.data_ptr()  # never re-pointed away from its holder
    assert [d.data_ptr() for d in dst[-4:]] == ptrs[-4:]
    flat = pairs._flat.flats[0]
    lo, hi = flat.data_ptr(), flat.data_ptr() + flat.nbytes
    assert all(lo <= d.data_ptr() < hi for d in pairs._flat.dst)


@needs_flat
def test_moved_destination_drops_the_flat_plan():
    def run(flatten, fast):
        dst, src, _ = _pairs(3, torch.float32)
        pairs = kernels.TensorPairs(dst, src)
        if flatten:
            pairs.flatten_small_destinations()
        pairs.mul_add_(0.25, fast=fast)
        dst[0].data = dst[0].data.clone() + 1  # a user re-points one ema buffer
        pairs.mul_add_(0.5, fast=fast)
        return dst, pairs

    fast, pairs = run(True, True)
    slow, _ = run(False, False)
    assert pairs._flat is None and not pairs.flatten  # dropped for good
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)


def test_resized_source_drops_the_flat_plan():
    def run(flatten, fast):
        dst = [torch.randn(4) for _ in range(5)]
        src = [nn.Parameter(torch.randn(4)) for _ in range(5)]
        pairs = kernels.TensorPairs(dst, src)
        if flatten:
            pairs.flatten_small_destinations()
        pairs.mul_add_(0.25, fast=fast)
        # two sources change size but keep the batch total: upstream's add_ fails
        src[0].data, src[1].data = torch.randn(3), torch.randn(5)
        with pytest.raises(RuntimeError):
            pairs.mul_add_(0.5, fast=fast)

    run(True, True)
    run(False, False)


def _swap_run(flatten, fast, tie=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(n, generator=g)) for n in (3, 17, 64, 1)]
    params += [nn.Parameter(torch.randn(2, 3, generator=g))]  # N-D source: not gathered
    src = list(params)
    if tie:
        src.append(params[1])  # the same parameter tracked twice (a tied weight)
    ema = [torch.randn(p.shape, generator=g) for p in src]
    pairs = kernels.TensorPairs(ema, src)
    if flatten:
        pairs.flatten_small_destinations()
    pairs.mul_add_(0.3, fast=fast)
    kernels.swap_(src, ema, fast=fast, pairs=pairs if flatten else None)
    out = [t.detach().clone() for t in src + ema]
    kernels.swap_(src, ema, fast=fast, pairs=pairs if flatten else None)
    return out + [t.detach().clone() for t in src + ema], pairs


@needs_flat
@pytest.mark.parametrize('batched', [False, True])
@pytest.mark.parametrize('tie', [False, True])
def test_flat_swap_equals_upstream_loop(tie, batched, monkeypatch):
    monkeypatch.setattr(swap, 'BATCH_COPIES_ON_CPU', batched)
    fast, pairs = _swap_run(True, True, tie)
    slow, _ = _swap_run(False, False, tie)
    assert pairs._flat is not None and pairs._flat.gathers
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert torch.equal(a, b), (tie, i)


@needs_flat
def test_flat_swap_batches_really_run(monkeypatch):
    calls = []
    real = flat_mod.FlatSmall.swap_batches_
    monkeypatch.setattr(flat_mod.FlatSmall, 'swap_batches_',
                        lambda self, batches: calls.append(len(batches)) or real(self, batches))
    _swap_run(True, True, tie=False)
    assert calls and all(calls)
    calls.clear()
    _swap_run(True, True, tie=True)  # overlapping sources: upstream's ordered loop instead
    assert not calls


@pytest.mark.parametrize('batched', [False, True])
def test_batched_copy_swap_with_overlap_keeps_upstream_order(batched, monkeypatch):
    """Views of one buffer listed in different pairs: the ordered loop, as upstream."""
    monkeypatch.setattr(swap, 'BATCH_COPIES_ON_CPU', batched)

    def run(fast):
        base = torch.arange(10.0)
        a = [base[0:4], base[2:6]]  # overlapping
        b = [torch.full((4,), -1.0), torch.full((4,), -2.0)]
        kernels.swap_(a, b, fast=fast)
        return [base.clone()] + [t.clone() for t in b]

    for x, y in zip(run(True), run(False)):
        assert torch.equal(x, y)


@needs_flat
def test_flat_buffers_save_and_load_as_separate_values(tmp_path):
    from compat_ema.mmcv import EMAHook

    class R:
        iter = 0

    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    r = R()
    r.model = model
    hook = EMAHook(momentum=0.5)
    hook.before_run(r)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    hook.after_train_iter(r)
    flat = hook._ema_pairs()._flat
    assert flat is not None and len(flat.dst) == 6  # every ema_* buffer was adopted
    want = {k: v.clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    size_flat = buf.tell()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}  # separate storages
    buf2 = io.BytesIO()
    torch.save(fresh, buf2)
    assert abs(size_flat - buf2.tell()) < 2048  # the flat storage is written once, not per tensor
    buf.seek(0)
    loaded = torch_load(buf, weights_only=True)
    other = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    for name in hook.param_ema_buffer.values():
        other.register_buffer(name, torch.zeros_like(want[name]))
    other.load_state_dict(loaded)
    for k, v in other.state_dict().items():
        assert torch.equal(v, want[k]), k
    # 0.5 * (p0 + 1) + 0.5 * p0... the first update averages the moved params in
    assert not torch.equal(want['ema_0_weight'], want['0.weight'])


def test_hooks_with_flat_buffers_equal_faithful_after_every_call():
    """Every hook (mmcv, mmdet, mmengine), driven through updates and swaps, with the flat
    buffer and the batched swaps in effect (default thresholds): identical to the
    faithful loops."""
    from test_kernels import _hooks, drive  # the event-stream driver of the kernel tests

    for name, (make_hook, engine) in _hooks().items():
        fast = drive(make_hook, True, engine)
        slow = drive(make_hook, False, engine)
        assert len(fast) == len(slow)
        for i, (a, b) in enumerate(zip(fast, slow)):
            for k in a:
                assert torch.equal(a[k], b[k]), f'{name}: call {i}, {k}'


@needs_flat
def test_env_switch_keeps_every_buffer_in_its_own_storage():
    import os
    import subprocess
    import sys
    code = (
        "import torch, torch.nn as nn\n"
        "from compat_ema.mmcv import EMAHook\n"
        "m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))\n"
        "r = type('R', (), {'model': m, 'iter': 0})()\n"
        "h = EMAHook(momentum=0.5); h.before_run(r); h.after_train_iter(r)\n"
        "print(h._ema_pairs()._flat is None,\n"
        "      all(b.untyped_storage().nbytes() == b.nbytes for b in h._ema_pairs().dst))\n")
    for value, want in (('0', 'True True'), ('', 'False False')):
        env = dict(os.environ, COMPAT_EMA_FLAT=value)
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                             text=True, check=True, timeout=120).stdout.split()
        assert ' '.join(out) == want, (value, out)


@needs_flat
@pytest.mark.parametrize('ema_type', ['ExponentialMovingAverage', 'StochasticWeightAverage'])
def test_mmengine_flat_update_and_swap_equal_faithful(ema_type):
    """The averaged model's small parameters in the flat buffer: lerp_/SWA over gathered
    1-D sources, swaps a batch at a time, with the hook's cached walk results."""
    from compat_ema.mmengine import EMAHook

    class R:
        iter = 0
        epoch = 0
        max_iters = 100
        max_epochs = 10
        _resume = False

    def run(fast):
        kernels.set_fast_path(fast)
        try:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(7, 33), nn.LayerNorm(33), nn.Linear(33, 5))
            r = R()
            r.model = model
            hook = EMAHook(ema_type=ema_type, momentum=0.3) if ema_type[0] == 'E' else \
                EMAHook(ema_type=ema_type)
            hook.before_run(r)
            hook.before_train(r)
            snaps = []
            for it in range(6):
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(0.9).add_(0.01 * (it + 1))
                r.iter = it
                hook.after_train_iter(r, batch_idx=it)
                if it % 2 == 1:
                    hook.before_val_epoch(r)
                    snaps.append([t.detach().clone() for t in model.state_dict().values()])
                    hook.after_val_epoch(r)
                snaps.append([t.detach().clone() for t in hook.ema_model.state_dict().values()])
            return snaps, hook
        finally:
            kernels.set_fast_path(True)

    fast, hook = run(True)
    slow, _ = run(False)
    flat = hook.ema_model.__dict__['_compat_plan']['avg_floating']._flat
    assert flat is not None and flat.gathers and len(flat.dst) == 6  # it ran
    for i, (a, b) in enumerate(zip(fast, slow)):
        for x, y in zip(a, b):
            assert torch.equal(x, y), i
