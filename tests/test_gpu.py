"""CUDA differential checks (marked ``gpu``: skipped cleanly without a CUDA device).

The golden trajectories on CUDA are checked in tests/test_golden_trajectories.py;
here the kernels and averaged models are compared between the CPU and CUDA on the
same inputs. Moves (copy, swap) must be bitwise; arithmetic must stay within the
tolerance policy's CUDA row (compat_ema.testing.golden.tolerance_for, MIGRATION.md
"Tolerance policy"; measured with benchmarks/gpu_tolerance.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compat_ema.core import kernels
from compat_ema.testing import golden

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(7, 5), (33,), (), (4, 3, 2), (1000,)]


def _tensors(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]


def _run(op, dtype, device, fast, arg):
    dst = [t.to(device) for t in _tensors(dtype, 1)]
    src = [t.to(device) for t in _tensors(dtype, 2)]
    for _ in range(5):
        if op == 'swap_':
            kernels.swap_(dst, src, fast=fast)
        elif op == 'copy_':
            kernels.copy_(dst, src, fast=fast)
        else:
            getattr(kernels, op)(dst, src, arg, fast=fast)
        src = [s.mul(0.75).add(0.125) for s in src]  # same elementwise ops on both devices
    return {f'dst{i}': t.cpu() for i, t in enumerate(dst)}


@pytest.mark.parametrize('fast', [True, False], ids=['foreach', 'faithful'])
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: str(d).replace('torch.', ''))
@pytest.mark.parametrize('op, arg', [('mul_add_', 0.0002), ('mul_add_', 0.3), ('lerp_', 0.0002),
                                     ('lerp_', 0.7), ('swa_add_', 1 / 3), ('copy_', None),
                                     ('swap_', None)])
def test_kernel_cuda_matches_cpu(op, arg, dtype, fast):
    cpu = _run(op, dtype, 'cpu', fast, arg)
    cuda = _run(op, dtype, 'cuda', fast, arg)
    if op in ('copy_', 'swap_'):
        golden.assert_matches(cpu, cuda, context=f'{op} {dtype} cpu vs cuda (moves are exact)')
        return
    tol = golden.tolerance_for(torch.__version__, 'cuda')
    golden.assert_matches(cpu, cuda, ulp=tol.ulp, atol=tol.atol,
                          context=f'{op}({arg}) {dtype} cpu vs cuda, {tol.reason}')


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: str(d).replace('torch.', ''))
def test_foreach_and_faithful_agree_on_cuda(dtype):
    tol = golden.tolerance_for(torch.__version__, 'cuda')
    for op, arg in (('mul_add_', 0.3), ('lerp_', 0.3), ('swa_add_', 0.25)):
        golden.assert_matches(_run(op, dtype, 'cuda', False, arg), _run(op, dtype, 'cuda', True, arg),
                              ulp=tol.ulp, atol=tol.atol, context=f'{op} {dtype} on cuda')


def test_averaged_model_on_cpu_from_cuda_source_is_bitwise_the_cpu_result():
    """``device='cpu'``: the source is moved to the CPU before averaging, so a CUDA source
    gives exactly the all-CPU result (upstream: ``src.to(p_avg.device)``)."""
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage

    def run(src_device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(src_device)
        avg = ExponentialMovingAverage(model, momentum=0.1, device=torch.device('cpu'))
        for k in range(4):
            with torch.no_grad():
                for i, p in enumerate(model.parameters()):
                    g = torch.Generator().manual_seed(100 * k + i)
                    p.add_(torch.randn(p.shape, generator=g).to(src_device))
            model(torch.randn(5, 4, generator=torch.Generator().manual_seed(k)).to(src_device))
            avg.update_parameters(model)
        return {k: v.cpu() for k, v in avg.state_dict().items()}

    cpu, cuda = run('cpu'), run('cuda')
    params = {k: v for k, v in cpu.items() if 'running' not in k and k != 'steps'}
    golden.assert_matches(params, {k: cuda[k] for k in params}, context='EMA of parameters')
    assert int(cpu['steps']) == int(cuda['steps']) == 4


@pytest.mark.parametrize('generation', ['mmcv', 'mmdet', 'mmengine'])
def test_hooks_on_a_cuda_model_keep_state_on_cuda(generation):
    """EMA copies live where the model lives; swapping in and out is exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).cuda()
    from compat_ema.core.runner import SimpleRunner
    runner = SimpleRunner(model, max_iters=10, max_epochs=2)
    if generation == 'mmcv':
        from compat_ema.mmcv.runner.hooks.ema import EMAHook
        hook = EMAHook(momentum=0.5, warm_up=1)
    elif generation == 'mmdet':
        from compat_ema.mmdet.core.hook.ema import ExpMomentumEMAHook
        hook = ExpMomentumEMAHook(momentum=0.5)
    else:
        from compat_ema.mmengine.hooks.ema_hook import EMAHook
        hook = EMAHook(momentum=0.5)
    hook.before_run(runner)
    for it in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        runner.iter = it
        if generation == 'mmengine':
            hook.after_train_iter(runner, batch_idx=it)
        else:
            hook.after_train_iter(runner)
    state = (hook.ema_model.state_dict() if generation == 'mmengine' else
             {k: v for k, v in model.state_dict().items() if k.startswith('ema_')})
    if generation == 'mmengine':
        # upstream: ``steps`` is created with ``device=None`` (the CPU) unless ``device`` is given
        assert not state.pop('steps').is_cuda
    assert state and all(v.is_cuda for v in state.values())
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    swap_in, swap_out = (('before_val_epoch', 'after_val_epoch') if generation == 'mmengine'
                         else ('after_train_epoch', 'before_train_epoch'))
    getattr(hook, swap_in)(runner)
    assert not torch.equal(model[0].weight, raw['0.weight'])
    getattr(hook, swap_out)(runner)
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k]), k
