"""The fast kernels equal the faithful per-tensor loops bit for bit, and the fast swap
is unobservable wherever another object could see the difference.

* property tests: random shapes (0-d, empty, sizes that are not multiples of any
  vector width, one above the 32768-element parallel grain), dtypes (float32,
  float64, bfloat16, float16), non-contiguous tensors and 1 or 2 threads: the
  foreach path and the faithful loop (upstream's exact per-tensor ops) must
  give identical tensors;
* every hook, driven through an event stream with the fast path on and off,
  must leave identical parameters, buffers, ``ema_*`` buffers and ``steps``
  after every hook call;
* the swap: storage is exchanged only when nothing else holds the storage;
  views, flattened parameters, held ``state_dict()`` results, shared memory,
  tied weights and mmdet's detached aliases keep upstream's in-place semantics.

CUDA versions are marked ``gpu`` (skipped without a device).
"""
from __future__ import annotations

import random
import warnings

import pytest
import torch
import torch.nn as nn

from compat_ema.core import batching, flat as flat_mod, kernels, swap
from helpers import fast_path

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
OPS = ['mul_add_', 'lerp_', 'swa_add_', 'copy_', 'swap_']
WEIGHTS = [0.0002, 0.3, 0.7, 1 / 3, 0.999]


@pytest.fixture(autouse=True)
def exchange_small_tensors(monkeypatch):
    """Let the tiny test tensors take the storage-exchange path (normally only >= 8192 elements)
    and keep them out of the flat buffer of small destinations (tests of it set its threshold)."""
    monkeypatch.setattr(swap, 'EXCHANGE_MIN_NUMEL', 1)
    monkeypatch.setattr(flat_mod, 'FLAT_MAX_NUMEL', 1)


def random_tensors(rng: random.Random, dtype, device='cpu', n=12):
    """Random shapes incl. 0-d, empty, odd sizes, a >32768-element one, non-contiguous views."""
    out = []
    shapes = [(), (0,), (1,), (7,), (17, 3), (2, 0, 3), (40_001,), (5, 9, 7)]
    shapes += [tuple(rng.randint(1, 37) for _ in range(rng.randint(1, 3))) for _ in range(n - len(shapes))]
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    for shape in shapes:
        t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
        kind = rng.choice(['contig', 'contig', 't', 'strided'])
        if kind == 't' and t.dim() >= 2:
            t = t.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous, dense
        elif kind == 'strided' and t.dim() >= 1 and t.numel():
            big = torch.randn((shape[0] * 2,) + shape[1:], generator=g,
                              dtype=torch.float64).to(dtype).to(device)
            t = big[::2]  # non-contiguous, with gaps
        out.append(t)
    return out


def _cpu_lerp_supports(dtype) -> bool:
    try:
        torch.zeros(2, dtype=dtype).lerp_(torch.ones(2, dtype=dtype), 0.5)
    except RuntimeError:
        return False
    return True


def apply(op, dst, src, arg, fast):
    if op == 'swap_':
        kernels.swap_(dst, src, fast=fast)
    elif op == 'copy_':
        kernels.copy_(dst, src, fast=fast)
    else:
        getattr(kernels, op)(dst, src, arg, fast=fast)


def run_op(op, dtype, seed, fast, device='cpu'):
    rng = random.Random(seed)
    dst = random_tensors(rng, dtype, device)
    rng2 = random.Random(seed + 1)
    src = [torch.randn(d.shape, generator=torch.Generator().manual_seed(rng2.randint(0, 99)),
                       dtype=torch.float64).to(dtype).to(device) for d in dst]
    for step, w in enumerate(WEIGHTS):
        apply(op, dst, src, w, fast)
        src = [s.mul(0.75).add(0.125 * step) for s in src]
    return dst, src


@pytest.mark.parametrize('threads', [1, 2], indirect=True)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('op', OPS)
def test_fast_equals_faithful_bitwise_cpu(op, dtype, threads):
    if op == 'lerp_' and not _cpu_lerp_supports(dtype):
        pytest.skip(f'this torch has no CPU lerp_ for {dtype} (torch 1.13: float16); '
                    'upstream lerp_ fails there the same way')
    for seed in (0, 1):
        fast_dst, fast_src = run_op(op, dtype, seed, True)
        slow_dst, slow_src = run_op(op, dtype, seed, False)
        for i, (a, b) in enumerate(zip(fast_dst + fast_src, slow_dst + slow_src)):
            assert a.shape == b.shape and a.stride() == b.stride(), (op, dtype, i)
            assert torch.equal(a, b), f'{op} {dtype} threads={threads} seed={seed}: tensor {i} differs'


@pytest.mark.skipif(not batching.HAS_FOREACH_COPY, reason='no torch._foreach_copy_ in this torch (1.13)')
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_batched_copy_swap_equals_faithful_on_cpu(dtype, monkeypatch):
    """The foreach copy swap (the CUDA default) run on CPU: same tensors as the loop."""
    monkeypatch.setattr(swap, 'BATCH_COPIES_ON_CPU', True)
    monkeypatch.setattr(swap, 'EXCHANGE_MIN_NUMEL', 1 << 40)  # every pair is copied
    monkeypatch.setattr(batching, 'BATCH_BYTES', 256)  # several batches
    calls = []
    real = torch._foreach_copy_
    monkeypatch.setattr(torch, '_foreach_copy_', lambda *a, **k: calls.append(1) or real(*a, **k))
    def run(seed, fast):
        rng = random.Random(seed)
        dst = [t.contiguous() for t in random_tensors(rng, dtype)]
        src = [torch.randn(d.shape, dtype=torch.float64).to(dtype) for d in dst]
        kernels.swap_(dst, src, fast=fast)
        return dst + src

    for seed in (0, 1):
        torch.manual_seed(seed)
        fast = run(seed, True)
        torch.manual_seed(seed)
        slow = run(seed, False)
        for a, b in zip(fast, slow):
            assert torch.equal(a, b)
    assert calls  # the batched path ran (contiguous, no overlaps)


@pytest.mark.parametrize('op', ['mul_add_', 'swa_add_'])
def test_cache_sized_batches_do_not_change_results(op, monkeypatch):
    monkeypatch.setattr(batching, 'BATCH_BYTES', 64)  # many small batches
    fast_dst, _ = run_op(op, torch.float32, 5, True)
    monkeypatch.setattr(batching, 'BATCH_BYTES', 1 << 40)  # one batch
    whole_dst, _ = run_op(op, torch.float32, 5, True)
    slow_dst, _ = run_op(op, torch.float32, 5, False)
    for a, b, c in zip(fast_dst, whole_dst, slow_dst):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_faithful_loop_matches_float64_formula():
    """The faithful loop itself is upstream's arithmetic: checked against float64 within one rounding."""
    g = torch.Generator().manual_seed(3)
    e = torch.randn(1000, generator=g)
    s = torch.randn(1000, generator=g)
    out = e.clone()
    kernels.mul_add_([out], [s], 0.3, fast=False)
    ref = e.double() * (1 - 0.3) + s.double() * 0.3
    assert torch.allclose(out.double(), ref, rtol=0, atol=4e-7)
    assert not torch.equal(out, e)


def test_mul_add_bf16_foreach_would_differ_so_loop_is_used():
    """foreach mul_ by a Python scalar rounds differently for bfloat16 on CPU (why the loop is kept)."""
    g = torch.Generator().manual_seed(0)
    e = [torch.randn(64, generator=g).bfloat16() for _ in range(4)]
    loop = [t.clone() for t in e]
    fe = [t.clone() for t in e]
    for t in loop:
        t.mul_(0.7)
    torch._foreach_mul_(fe, 0.7)
    if all(torch.equal(a, b) for a, b in zip(loop, fe)):
        pytest.skip('this torch build rounds foreach mul_ like the loop for bfloat16')
    got = [t.clone() for t in e]
    kernels.mul_add_(got, [torch.zeros_like(t) for t in e], 0.3, fast=True)
    assert all(torch.equal(a, b) for a, b in zip(got, loop))


def test_aliased_destinations_take_the_loop_in_order():
    base = torch.randn(6)
    dst = [base, base]  # the same memory twice (tied weights through state_dict())
    src = [torch.full((6,), 1.0), torch.full((6,), 2.0)]
    ref = base.clone()
    ref.mul_(0.5).add_(src[0], alpha=0.5)
    ref.mul_(0.5).add_(src[1], alpha=0.5)
    kernels.mul_add_(dst, src, 0.5, fast=True)
    assert torch.equal(base, ref)


def test_tensor_pairs_reads_current_storage():
    p = nn.Parameter(torch.ones(4))
    e = torch.zeros(4)
    pairs = kernels.TensorPairs([e], [p])
    p.data = torch.full((4,), 3.0)  # replaced storage, same Parameter object
    pairs.mul_add_(0.5)
    assert torch.equal(e, torch.full((4,), 1.5))
    assert e.grad_fn is None and not e.requires_grad


# ------------------------------------------------------------------ swap semantics

def _use_count_available():
    return kernels.exchangeable(nn.Parameter(torch.ones(2)), torch.zeros(2))


needs_exchange = pytest.mark.skipif(not _use_count_available(),
                                    reason='storage use counts are not exposed by this torch')


@needs_exchange
def test_swap_exchanges_plain_storages():
    p = nn.Parameter(torch.randn(3, 4))
    b = torch.randn(3, 4)
    p0, b0 = p.detach().clone(), b.clone()
    pp, bp = p.data_ptr(), b.data_ptr()
    kernels.swap_([p], [b], fast=True)
    assert torch.equal(p, b0) and torch.equal(b, p0)
    assert (p.data_ptr(), b.data_ptr()) == (bp, pp)  # exchanged, no copy
    assert isinstance(p, nn.Parameter) and p.requires_grad and not b.requires_grad


def _swap_both_ways(make):
    """Run ``make() -> (a, b, observers)`` through fast and faithful swaps; compare everything."""
    results = []
    for fast in (True, False):
        torch.manual_seed(0)
        a, b, observers = make()
        kernels.swap_(a, b, fast=fast)
        results.append([t.detach().clone() for t in list(a) + list(b) + list(observers)])
    for x, y in zip(*results):
        assert torch.equal(x, y)
    return results[0]


def test_swap_keeps_views_of_parameters_in_sync():
    keep = {}

    def make():
        p = nn.Parameter(torch.randn(4, 5))
        b = torch.randn(4, 5)
        keep['view'] = p.view(-1)
        keep['b0'] = b.clone()
        return [p], [b], [keep['view']]

    _swap_both_ways(make)
    assert torch.equal(keep['view'], keep['b0'].view(-1))  # the view sees the swapped values


def test_swap_keeps_flattened_parameters_in_place():
    """Parameters that are views of one flat buffer (FSDP flat params, ZeRO bucket views)."""
    keep = {}

    def make():
        flat = torch.randn(20)
        p1 = nn.Parameter(flat[:12].view(3, 4))
        p2 = nn.Parameter(flat[12:].view(8))
        ema = [torch.randn(3, 4), torch.randn(8)]
        keep.update(flat=flat, p1=p1, ema0=torch.cat([e.flatten() for e in ema]))
        return [p1, p2], ema, [flat]

    _swap_both_ways(make)
    assert torch.equal(keep['flat'], keep['ema0'])  # the flat buffer holds the swapped values
    assert keep['p1'].data_ptr() == keep['flat'].data_ptr()  # still a view of it


@needs_exchange
def test_swap_with_held_state_dict_copies_in_place():
    m = nn.Linear(3, 2)
    held = m.state_dict()  # a user holding detached aliases
    ema = [torch.randn(2, 3), torch.randn(2)]
    ema0 = [e.clone() for e in ema]
    kernels.swap_([m.weight, m.bias], ema, fast=True)
    assert torch.equal(held['weight'], ema0[0]) and torch.equal(held['bias'], ema0[1])
    assert held['weight'].data_ptr() == m.weight.data_ptr()


@needs_exchange
def test_swap_shared_memory_is_copied():
    p = nn.Parameter(torch.randn(5))
    p.data.share_memory_()
    b = torch.randn(5)
    ptr = p.data_ptr()
    b0 = b.clone()
    kernels.swap_([p], [b], fast=True)
    assert p.data_ptr() == ptr and torch.equal(p, b0)


@needs_exchange
def test_swap_aliases_are_repointed():
    p = nn.Parameter(torch.randn(3))
    alias = p.detach()
    b = torch.randn(3)
    b0 = b.clone()
    assert not kernels.exchangeable(p, b)  # the alias holds the storage
    kernels.swap_([p], [b], fast=True, aliases=[alias])
    assert torch.equal(p, b0) and alias.data_ptr() == p.data_ptr()


def test_swap_tied_entries_follow_upstream_order():
    def make():
        w = nn.Parameter(torch.randn(4))
        alias1, alias2 = w.detach(), w.detach()  # mmdet's state_dict lists tied weights twice
        return [alias1, alias2], [torch.randn(4), torch.randn(4)], [w]

    _swap_both_ways(make)


def test_small_tensors_are_copied_by_default(monkeypatch):
    monkeypatch.setattr(swap, 'EXCHANGE_MIN_NUMEL', 1 << 13)
    small, big = nn.Parameter(torch.randn(100)), nn.Parameter(torch.randn(1 << 13))
    e_small, e_big = torch.randn(100), torch.randn(1 << 13)
    ptrs = small.data_ptr(), big.data_ptr()
    want = e_small.clone(), e_big.clone()
    kernels.swap_([small, big], [e_small, e_big], fast=True)
    assert small.data_ptr() == ptrs[0] and torch.equal(small, want[0])
    if _use_count_available():
        assert big.data_ptr() != ptrs[1]
    assert torch.equal(big, want[1])


def test_swap_exchange_can_be_turned_off():
    p = nn.Parameter(torch.randn(3))
    b = torch.randn(3)
    ptr = p.data_ptr()
    kernels.set_exchange_swap(False)
    try:
        kernels.swap_([p], [b], fast=True)
    finally:
        kernels.set_exchange_swap(True)
    assert p.data_ptr() == ptr


def _memo_run(fast, event):
    """Swap 4 times through one TensorPairs (so later swaps may repeat the last exchange),
    with a user action between swaps 2 and 3; snapshot everything after each swap."""
    torch.manual_seed(3)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(6))]
    ema = [torch.randn(4, 3), torch.randn(5), torch.randn(6)]
    pairs = kernels.TensorPairs(ema, params)
    held = {}
    snaps = []
    for k in range(4):
        if k == 2:
            if event == 'view':
                held['v'] = params[0].view(-1)  # someone now holds a view: copy in place
            elif event == 'repoint':
                params[1].data = torch.full((5,), 9.0)
            elif event == 'share':
                ema[2].share_memory_()
            elif event == 'reinterpret':
                ema[1].data = ema[1].data.view(torch.int32)  # same address, other dtype
            elif event == 'alias':
                held['a'] = params[2].detach()
        kernels.swap_(params, ema, fast=fast, pairs=pairs if fast else None)
        snaps.append([t.detach().clone() for t in params + ema + list(held.values())])
    return snaps, pairs


@needs_exchange
@pytest.mark.parametrize('event', ['none', 'view', 'repoint', 'share', 'reinterpret', 'alias'])
def test_repeated_exchange_revalidates_every_premise(event):
    fast, pairs = _memo_run(True, event)
    slow, _ = _memo_run(False, event)
    for k, (a, b) in enumerate(zip(fast, slow)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert torch.equal(x, y), (event, k, i)
    assert pairs._exchanged  # the exchanges were remembered: the repeat path ran


@needs_exchange
def test_repeated_exchange_with_aliases_repeats_cheaply(monkeypatch):
    """mmdet-style detached aliases passed in: the second and later swaps take the repeat
    path (no full check), the aliases keep following their owners."""
    full = []
    real = swap._try_exchange
    monkeypatch.setattr(swap, '_try_exchange', lambda *a: full.append(1) or real(*a))

    def run(fast):
        torch.manual_seed(1)
        p = nn.Parameter(torch.randn(6))
        alias = p.detach()
        e = torch.randn(6)
        pairs = kernels.TensorPairs([e], [alias])
        snaps = []
        for _ in range(4):
            kernels.swap_([p], [e], fast=fast, aliases=[alias], pairs=pairs if fast else None)
            assert alias.data_ptr() == p.data_ptr()
            snaps.append([p.detach().clone(), e.clone(), alias.clone()])
        return snaps

    fast = run(True)
    assert len(full) == 1  # one full check, then three repeats
    for a, b in zip(fast, run(False)):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


@needs_exchange
def test_failed_exchange_keeps_its_place_in_the_order():
    """(w, shared) cannot exchange (shared memory); (w, e) after it could, but must not
    run before the first pair's copy: upstream copies pair by pair, in order."""
    def run(fast):
        torch.manual_seed(2)
        w = nn.Parameter(torch.randn(5))
        shared = torch.randn(5).share_memory_()
        e = torch.randn(5)
        kernels.swap_([w, w], [shared, e], fast=fast)
        return [w.detach().clone(), shared.clone(), e.clone()]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


@needs_exchange
def test_repeated_exchange_leaves_held_view_in_place():
    torch.manual_seed(0)
    p, e = nn.Parameter(torch.randn(8)), torch.randn(8)
    pairs = kernels.TensorPairs([e], [p])
    kernels.swap_([p], [e], pairs=pairs)
    kernels.swap_([p], [e], pairs=pairs)  # exchanged twice: back to the original storages
    view = p.view(2, 4)
    ptr = p.data_ptr()
    want = e.clone()
    kernels.swap_([p], [e], pairs=pairs)
    assert p.data_ptr() == ptr and torch.equal(view.reshape(-1), want)


# ------------------------------------------------------------------ hooks, fast vs faithful

class Net(nn.Module):
    """conv + bn + tied linear pair + a parameter with a live view held by the model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc1 = nn.Linear(3, 3)
        self.fc2 = nn.Linear(3, 3)
        self.fc2.weight = self.fc1.weight  # tied
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        x = self.bn(self.conv(x)).mean((2, 3))
        return self.head(self.fc2(self.fc1(x)))


class Runner:
    def __init__(self, model):
        self.model = model
        self.iter = 0
        self.epoch = 0
        self.max_iters = 100
        self.max_epochs = 10
        self._resume = False


def _snapshot(model, hook):
    snap = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    ema_model = getattr(hook, 'ema_model', None)
    if ema_model is not None:
        snap.update({f'ema.{k}': v.detach().clone() for k, v in ema_model.state_dict().items()})
    return snap


def drive(make_hook, fast, engine, iters=7, per_epoch=3, seed=0, device='cpu'):
    with fast_path(fast):
        torch.manual_seed(seed)
        model = Net().to(device)
        runner = Runner(model)
        hook = make_hook()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(seed + 1)
        snaps = []
        hook.before_run(runner)
        if engine:
            hook.before_train(runner)
        for it in range(iters):
            if not engine and it % per_epoch == 0:
                hook.before_train_epoch(runner)
                snaps.append(_snapshot(model, hook))
            model.train()
            opt.zero_grad()
            model(torch.randn(4, 2, 5, 5, generator=g).to(device)).pow(2).sum().backward()
            opt.step()
            runner.iter = it
            if engine:
                hook.after_train_iter(runner, batch_idx=it)
            else:
                hook.after_train_iter(runner)
            snaps.append(_snapshot(model, hook))
            if it % per_epoch == per_epoch - 1:
                runner.epoch += 1
                if engine:
                    hook.before_val_epoch(runner)
                    snaps.append(_snapshot(model, hook))
                    with torch.no_grad():
                        model.eval()
                        model(torch.randn(2, 2, 5, 5, generator=g).to(device))
                    hook.after_val_epoch(runner)
                else:
                    hook.after_train_epoch(runner)
                snaps.append(_snapshot(model, hook))
        return snaps


def _hooks():
    from compat_ema.mmcv import EMAHook as MmcvEMA
    from compat_ema.mmdet.core.hook.ema import (BaseEMAHook, ExpMomentumEMAHook,
                                                LinearMomentumEMAHook)
    from compat_ema.mmengine import EMAHook as EngineEMA
    return {
        'mmcv': (lambda: MmcvEMA(momentum=0.1, interval=1, warm_up=3), False),
        'mmcv-int2': (lambda: MmcvEMA(momentum=0.3, interval=2), False),
        'mmdet-exp': (lambda: ExpMomentumEMAHook(momentum=0.01, total_iter=5), False),
        'mmdet-lin-skip': (lambda: LinearMomentumEMAHook(momentum=0.3, interval=2, warm_up=3,
                                                         skip_buffers=True), False),
        'mmdet-base': (lambda: BaseEMAHook(momentum=0.2), False),
        'mmengine': (lambda: EngineEMA(momentum=0.3), True),
        'mmengine-ub': (lambda: EngineEMA(momentum=0.3, update_buffers=True, interval=2), True),
        'mmengine-anneal': (lambda: EngineEMA(ema_type='MomentumAnnealingEMA', momentum=0.01,
                                              gamma=3, begin_iter=2), True),
        'mmengine-swa': (lambda: EngineEMA(ema_type='StochasticWeightAverage', interval=2), True),
        'mmengine-swa-ub': (lambda: EngineEMA(ema_type='StochasticWeightAverage',
                                              update_buffers=True), True),
    }


@pytest.mark.parametrize('name', list(_hooks()))
def test_hook_fast_and_faithful_identical_after_every_call(name):
    make_hook, engine = _hooks()[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fast = drive(make_hook, True, engine)
        slow = drive(make_hook, False, engine)
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert list(a) == list(b), (name, i)
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f'{name}: call {i}, {k}'
    # the run moved something: not a vacuous comparison
    assert any(not torch.equal(fast[0][k], fast[-1][k]) for k in fast[0] if 'ema' in k or 'weight' in k)


@needs_exchange
def test_mmcv_swap_exchanges_and_optimizer_state_follows_the_parameter():
    from compat_ema.mmcv import EMAHook
    model = nn.Linear(4, 3)
    runner = Runner(model)
    hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    hook.after_train_iter(runner)
    w_ptr, e_ptr = model.weight.data_ptr(), model.ema_weight.data_ptr()
    w, e = model.weight.detach().clone(), model.ema_weight.clone()
    hook.after_train_epoch(runner)
    assert model.weight.data_ptr() == e_ptr and model.ema_weight.data_ptr() == w_ptr
    assert torch.equal(model.weight, e) and torch.equal(model.ema_weight, w)
    assert opt.state[model.weight]['momentum_buffer'].shape == w.shape  # keyed by the same object
    assert hook.model_buffers['ema_weight'] is model._buffers['ema_weight']


@needs_exchange
def test_mmdet_swap_moves_the_real_parameters_not_just_aliases():
    from compat_ema.mmdet.core.hook.ema import BaseEMAHook
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    runner = Runner(model)
    hook = BaseEMAHook(momentum=0.5)
    hook.before_run(runner)
    model[0].weight.data.add_(1.0)
    runner.iter = 0
    hook.after_train_iter(runner)
    ema = model.ema_0_weight.clone()
    raw = model[0].weight.detach().clone()
    hook.after_train_epoch(runner)
    assert torch.equal(model[0].weight, ema) and torch.equal(model.ema_0_weight, raw)
    # the hook's detached aliases still alias the real tensors (as upstream's do)
    for name, alias in hook.model_parameters.items():
        owner = dict(model.named_parameters(), **dict(model.named_buffers()))[name]
        assert alias.data_ptr() == owner.data_ptr(), name
    # the next update reads the live (now EMA) weights
    runner.iter = 1
    before = model.ema_0_weight.clone()
    hook.after_train_iter(runner)
    assert torch.equal(model.ema_0_weight, before.mul(0.5).add(model[0].weight.detach(), alpha=0.5))


@needs_exchange
def test_mmengine_update_buffers_aliases_follow_the_swap():
    from compat_ema.mmengine import EMAHook
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    runner = Runner(model)
    hook = EMAHook(momentum=0.5, update_buffers=True)
    hook.before_run(runner)
    hook.before_train(runner)
    hook.after_train_iter(runner, batch_idx=0)
    hook.before_val_epoch(runner)
    for k, alias in hook.ema_model.avg_parameters.items():
        owner = hook.ema_model.module.state_dict(keep_vars=True)[k]
        assert alias.data_ptr() == owner.data_ptr(), k
    hook.after_val_epoch(runner)


def test_ddp_single_process_fast_equals_faithful(tmp_path):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip('gloo not available')
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from compat_ema.mmcv import EMAHook
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        results = []
        for fast in (True, False):
            kernels.set_fast_path(fast)
            torch.manual_seed(0)
            model = DDP(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)),
                        gradient_as_bucket_view=True)
            runner = Runner(model)
            hook = EMAHook(momentum=0.2)
            hook.before_run(runner)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            g = torch.Generator().manual_seed(1)
            for it in range(6):
                if it % 2 == 0:
                    hook.before_train_epoch(runner)
                opt.zero_grad()
                model(torch.randn(5, 4, generator=g)).pow(2).sum().backward()
                opt.step()
                runner.iter = it
                hook.after_train_iter(runner)
                if it % 2 == 1:
                    hook.after_train_epoch(runner)
            results.append({k: v.clone() for k, v in model.module.state_dict().items()})
        assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    finally:
        kernels.set_fast_path(True)
        dist.destroy_process_group()


# ------------------------------------------------------------------ CUDA

@pytest.mark.gpu
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('op', OPS)
def test_fast_equals_faithful_bitwise_cuda(op, dtype):
    for seed in (0, 1):
        fast_dst, fast_src = run_op(op, dtype, seed, True, device='cuda')
        slow_dst, slow_src = run_op(op, dtype, seed, False, device='cuda')
        for i, (a, b) in enumerate(zip(fast_dst + fast_src, slow_dst + slow_src)):
            assert torch.equal(a.cpu(), b.cpu()), f'{op} {dtype} cuda seed={seed}: tensor {i} differs'


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(_hooks()))
def test_hook_fast_and_faithful_identical_cuda(name):
    make_hook, engine = _hooks()[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fast = drive(make_hook, True, engine, device='cuda')
        slow = drive(make_hook, False, engine, device='cuda')
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        for k in a:
            assert torch.equal(a[k].cpu(), b[k].cpu()), f'{name}: call {i}, {k} (cuda)'


def test_mmengine_cached_plan_follows_structure_changes():
    """A replaced parameter, a new buffer and a moved dtype after the plan was built:
    the fast path must do what the per-call (upstream-shaped) path does."""
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage

    def run(fast):
        kernels.set_fast_path(fast)
        try:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
            ema = ExponentialMovingAverage(model, momentum=0.25)
            out = []
            for step in range(6):
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.5 + step)
                    model[1].running_mean.add_(1.0)
                if step == 2:
                    model[2].weight = nn.Parameter(torch.full((2, 4), 7.0))  # new object
                if step == 4:
                    model[1].running_var = model[1].running_var * 2  # buffer replaced
                ema.update_parameters(model)
                out.append({k: v.clone() for k, v in ema.state_dict().items()})
            return out
        finally:
            kernels.set_fast_path(True)

    fast, slow = run(True), run(False)
    for a, b in zip(fast, slow):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert torch.equal(fast[3]['module.2.weight'], fast[2]['module.2.weight'].lerp(
        torch.full((2, 4), 7.0 + 3.5), 0.25))
