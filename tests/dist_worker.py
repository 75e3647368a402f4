"""One rank of the distributed tests (tests/test_distributed.py spawns two of these).

Usage: ``python dist_worker.py SCENARIO RANK WORLD_SIZE PORT OUT_DIR``.

Every rank joins a gloo process group through ``env://`` on 127.0.0.1 with a
hard ``timeout`` (COMPAT_EMA_DIST_TIMEOUT seconds, default 60), runs the
scenario and writes ``OUT_DIR/rank<R>.pt``; the parent compares the ranks.

Scenarios:

* ``ddp``: for every generation (mmcv EMAHook, mmdet Base/Exp/Linear,
  mmengine EMAHook with each averaged model) a DistributedDataParallel model
  trains 2 epochs x 3 iterations on rank-specific data with the hook called
  where the real runners call it (swaps included); rank 0 writes a checkpoint
  after epoch 1 and both ranks resume from it and train epoch 2 again.
* ``fsdp2``: ``fully_shard`` training; each rank averages its own DTensor
  shards with compat_ema's kernels, and with compat_ema's averaged models.
* ``crash``: rank 1 raises, rank 0 waits for it (the fail-fast test).
* ``all``: ``ddp`` then ``fsdp2`` where this torch has it, in one process group
  (one torch import per rank: most of the wall time on a loaded machine).
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCHS, ITERS = 2, 3

# name -> (generation, hook factory)
GENERATIONS = {
    'mmcv': ('mmcv', lambda m: m.EMAHook(momentum=0.2, interval=2, warm_up=3)),
    'mmdet_base': ('mmdet', lambda m: m.BaseEMAHook(momentum=0.2, skip_buffers=True)),
    'mmdet_exp': ('mmdet', lambda m: m.ExpMomentumEMAHook(momentum=0.2, total_iter=5)),
    'mmdet_linear': ('mmdet', lambda m: m.LinearMomentumEMAHook(momentum=0.2, warm_up=3,
                                                                interval=2)),
    'mmengine_ema': ('mmengine', lambda m: m.EMAHook(momentum=0.2)),
    'mmengine_anneal': ('mmengine', lambda m: m.EMAHook(ema_type='MomentumAnnealingEMA',
                                                        momentum=0.1, gamma=3,
                                                        update_buffers=True)),
    'mmengine_swa': ('mmengine', lambda m: m.EMAHook(ema_type='StochasticWeightAverage',
                                                     interval=2)),
}


class Net(nn.Module):
    """Linear(4, 6) -> BatchNorm1d(6) -> Linear(6, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def batch(rank: int, it: int):
    """Rank-specific data, so DDP's all-reduce is what keeps the ranks equal."""
    g = torch.Generator().manual_seed(1000 * it + 17 * rank + 1)
    return torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)


def hook_module(generation: str):
    if generation == 'mmcv':
        from compat_ema.mmcv.runner.hooks import ema
    elif generation == 'mmdet':
        from compat_ema.mmdet.core.hook import ema
    else:
        from compat_ema.mmengine.hooks import ema_hook as ema
    return ema


def ema_state(generation: str, ddp, hook) -> dict:
    """The hook's EMA state: mmcv/mmdet ``ema_*`` buffers, mmengine's averaged model."""
    if generation == 'mmengine':
        return {k: v.detach().clone() for k, v in hook.ema_model.state_dict().items()}
    return {k: v.detach().clone() for k, v in ddp.module.state_dict().items()
            if k.startswith('ema_')}


def model_state(ddp) -> dict:
    return {k: v.detach().clone() for k, v in ddp.module.state_dict().items()
            if not k.startswith('ema_')}


def save_atomic(obj, path: str) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(name: str, rank: int, out_dir: str, resume: bool) -> dict:
    """Train one generation's DDP model; return what the parent compares."""
    from compat_ema.core.runner import SimpleRunner
    from compat_ema.core.state_dict import load_state_dict
    from torch.nn.parallel import DistributedDataParallel as DDP

    generation, factory = GENERATIONS[name]
    ckpt_path = os.path.join(out_dir, f'{name}.pth')
    torch.manual_seed(0)
    ddp = DDP(Net())
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    hook = factory(hook_module(generation))
    runner = SimpleRunner(ddp, max_iters=EPOCHS * ITERS, max_epochs=EPOCHS, resume=resume)
    rec = {'snapshots': [], 'grads': [], 'losses': [], 'events': []}

    def mmcv_resume(path):  # what mmcv's BaseRunner.resume does, on both ranks
        ckpt = torch.load(path, map_location='cpu')
        load_state_dict(ddp, ckpt['state_dict'], generation='mmcv')
        opt.load_state_dict(ckpt['optimizer'])
        runner.epoch, runner.iter = ckpt['meta']['epoch'], ckpt['meta']['iter']

    start_epoch = 0
    if generation != 'mmengine':
        if resume:
            hook.checkpoint = ckpt_path  # the hooks' resume_from
            runner._resume_fn = mmcv_resume
        hook.before_run(runner)
        start_epoch = runner.epoch
    else:
        hook.before_run(runner)
        if resume:  # mmengine Runner.resume: load, after_load_checkpoint, then the model
            ckpt = torch.load(ckpt_path, map_location='cpu')
            hook.after_load_checkpoint(runner, ckpt)
            load_state_dict(ddp.module, ckpt['state_dict'], generation='mmengine')
            opt.load_state_dict(ckpt['optimizer'])
            runner.epoch, runner.iter = ckpt['meta']['epoch'], ckpt['meta']['iter']
            start_epoch = runner.epoch
        hook.before_train(runner)

    for epoch in range(start_epoch, EPOCHS):
        runner.epoch = epoch
        if generation != 'mmengine':
            hook.before_train_epoch(runner)  # swap: raw weights back in (a no-op swap at epoch 0)
            rec['events'].append(('before_train_epoch', runner.iter))
        for i in range(ITERS):
            x, y = batch(rank, runner.iter)
            opt.zero_grad()
            loss = nn.functional.mse_loss(ddp(x), y)
            loss.backward()
            rec['losses'].append(loss.item())
            rec['grads'].append([p.grad.clone() for p in ddp.parameters()])
            opt.step()
            rec['snapshots'].append(model_state(ddp))
            if generation == 'mmengine':
                hook.after_train_iter(runner, batch_idx=i)
            else:
                hook.after_train_iter(runner)
            runner.iter += 1
        if generation != 'mmengine':
            # YOLOX-style priority (49): the EMA swap runs before CheckpointHook, so the
            # checkpoint's normal keys hold the EMA weights and ema_* the raw ones, and
            # resume + before_train_epoch's swap restores the uninterrupted state exactly.
            hook.after_train_epoch(runner)
            rec['events'].append(('after_train_epoch', runner.iter))
            if epoch == 0 and not resume and rank == 0:
                save_atomic({'meta': {'epoch': epoch + 1, 'iter': runner.iter},
                             'state_dict': {k: v.clone() for k, v in
                                            ddp.module.state_dict().items()},
                             'optimizer': opt.state_dict()}, ckpt_path)
        else:
            if epoch == 0 and not resume and rank == 0:  # CheckpointHook, then the val loop
                ckpt = {'meta': {'epoch': epoch + 1, 'iter': runner.iter},
                        'state_dict': ddp.module.state_dict(),
                        'optimizer': opt.state_dict()}
                hook.before_save_checkpoint(runner, ckpt)
                save_atomic(ckpt, ckpt_path)
            hook.before_val_epoch(runner)
            rec['val_weights'] = model_state(ddp)  # what validation sees (EMA weights)
            hook.after_val_epoch(runner)
            rec['events'].append(('val', runner.iter))
        if epoch == 0 and not resume:
            dist.barrier()  # the checkpoint exists before anyone resumes
    rec['ema'] = ema_state(generation, ddp, hook)
    rec['final'] = model_state(ddp)
    return rec


def scenario_ddp(rank: int, out_dir: str) -> dict:
    results = {}
    for name in GENERATIONS:
        results[name] = {'full': train(name, rank, out_dir, resume=False)}
        dist.barrier()
        results[name]['resumed'] = train(name, rank, out_dir, resume=True)
    return results


def _gather_full(local: torch.Tensor, like) -> torch.Tensor:
    """Gather this rank's shard into the full tensor laid out like the DTensor ``like``.

    ``shape``/``stride`` are passed because FSDP2 pads uneven dim-0 shards and
    ``from_local`` would otherwise infer ``local rows x world size``.
    """
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape,
                              stride=like.stride()).full_tensor()


def scenario_fsdp2(rank: int, out_dir: str) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from compat_ema.core import kernels
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage

    mesh = init_device_mesh('cpu', (dist.get_world_size(),))

    def shard(model: nn.Module) -> nn.Module:
        for sub in (model.fc1, model.fc2):
            fully_shard(sub, mesh=mesh)
        return fully_shard(model, mesh=mesh)

    torch.manual_seed(0)
    model = Net()
    # upstream's BaseAveragedModel deepcopies the model it averages, and FSDP2 refuses
    # deepcopy: build the averaged copy first, then shard both identically.
    averaged = ExponentialMovingAverage(model, momentum=0.2)
    init_full = {k: v.detach().clone() for k, v in model.named_parameters()}
    shard(model)
    shard(averaged.module)
    averaged.avg_parameters = dict(averaged.module.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    # the mmcv/mmdet update (mul_ then add_) on this rank's local shards only
    shard_ema = [p.to_local().detach().clone() for p in params]
    full_ema = [init_full[n].clone() for n in names]  # the unsharded EMA, on full tensors
    rec = {'full_params': [], 'local_numel': [p.to_local().numel() for p in params],
           'names': names}
    for it in range(EPOCHS * ITERS):
        x, y = batch(rank, it)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        kernels.mul_add_(shard_ema, [p.to_local().detach() for p in params], 0.2)
        full = [p.full_tensor().detach() for p in params]
        kernels.mul_add_(full_ema, full, 0.2)
        rec['full_params'].append([t.clone() for t in full])
        averaged.update_parameters(model)
    rec['gathered_mul_add'] = [_gather_full(e, p) for e, p in zip(shard_ema, params)]
    rec['unsharded_mul_add'] = full_ema
    rec['gathered_lerp'] = [p.full_tensor().detach().clone() for p in averaged.module.parameters()]
    rec['averaged_is_dtensor'] = all(type(p).__name__ == 'DTensor'
                                     for p in averaged.module.parameters())
    rec['steps'] = int(averaged.steps)
    return rec


def fsdp2_available() -> bool:
    """Whether this torch has FSDP2 (``torch.distributed.fsdp.fully_shard``), DTensor, and
    CPU streams with ``record_event``, which FSDP2's all-gather needs on the CPU (torch 2.6
    has fully_shard but fails there with "'Stream' object has no attribute 'record_event'")."""
    try:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: F401
        from torch.distributed.fsdp import fully_shard  # noqa: F401
        from torch.distributed.tensor import DTensor  # noqa: F401
    except ImportError:
        return False
    return hasattr(getattr(torch.cpu, 'Stream', None), 'record_event')


def main(argv) -> int:
    scenario, rank, world, port, out_dir = argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5]
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=port, RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    timeout = timedelta(seconds=float(os.environ.get('COMPAT_EMA_DIST_TIMEOUT', '60')))
    dist.init_process_group('gloo', init_method='env://', timeout=timeout)
    try:
        result = {}
        if scenario == 'crash':  # rank 1 fails; rank 0 would wait in the barrier for it
            if rank == 1:
                raise RuntimeError('deliberate failure on rank 1')
            dist.barrier()
        if scenario in ('ddp', 'all'):
            result['ddp'] = scenario_ddp(rank, out_dir)
        if scenario == 'fsdp2' or (scenario == 'all' and fsdp2_available()):
            result['fsdp2'] = scenario_fsdp2(rank, out_dir)
        save_atomic(result, os.path.join(out_dir, f'rank{rank}.pt'))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.path.insert(0, HERE)
    sys.exit(main(sys.argv))
