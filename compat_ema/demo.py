"""``compat-ema demo``: three EMA generations side by side, then a legacy config migrated.

Part 1 (:func:`generations_table`): a built-in model (Linear + BatchNorm) is
trained for a few epochs with the same data and optimizer under each
generation's EMA; the table shows, per iteration, the effective momentum each
generation used (``-`` when it skipped the update, ``copy`` for mmengine's
first update) and its EMA of ``fc.weight[0, 0]``.

Part 2 (:func:`showcase`, in :mod:`compat_ema.demo_showcase`): two built-in
legacy configs (a YOLOX-style ``ExpMomentumEMAHook`` at priority 49 and an
mmcv ``EMAHook``) are trained briefly in the fake mmcv runner, migrated with
``--exact`` and ``--native``, re-trained in the fake mmengine Runner, and the
EMA weights compared at every epoch; the configs, checkpoints (converted to
mmengine's layout, and the EMA weights exported) and a momentum plot are
written to a directory.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .core.runner import SimpleRunner
from .mmcv import EMAHook as MmcvEMAHook
from .mmdet import ExpMomentumEMAHook
from .mmengine import EMAHook as MmengineEMAHook


class TinyModel(nn.Module):
    """Linear(4, 3) followed by BatchNorm1d(3): the model the runs of docs/runner-behaviour.md use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


def _batches(n: int, seed: int = 1) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(4, 3, generator=g) * 3
    out = []
    for _ in range(n):
        x = torch.randn(8, 4, generator=g)
        out.append((x, x @ target))
    return out


def run_generation(name: str, hook, epochs: int, iters_per_epoch: int, seed: int = 0
                   ) -> List[Tuple[Optional[float], float]]:
    """Train TinyModel under ``hook`` and return (momentum used or None, EMA of fc.weight[0,0])."""
    torch.manual_seed(seed)
    model = TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    runner = SimpleRunner(model, max_iters=epochs * iters_per_epoch, max_epochs=epochs)
    data = _batches(epochs * iters_per_epoch)
    rows: List[Tuple[Optional[float], float]] = []
    hook.before_run(runner)
    if name == 'mmengine':
        hook.before_train(runner)
    for epoch in range(epochs):
        runner.epoch = epoch
        if name != 'mmengine':
            hook.before_train_epoch(runner)
        for i in range(iters_per_epoch):
            runner.iter = epoch * iters_per_epoch + i
            opt.zero_grad()
            x, y = data[runner.iter]
            (model(x) - y).pow(2).mean().backward()
            opt.step()
            used = _momentum_used(name, hook, runner.iter)
            if name == 'mmengine':
                hook.after_train_iter(runner, batch_idx=runner.iter)
                ema = hook.ema_model.module.fc.weight[0, 0].item()
            else:
                hook.after_train_iter(runner)
                ema = model.ema_fc_weight[0, 0].item()
            rows.append((used, ema))
        if name != 'mmengine':
            hook.after_train_epoch(runner)
    return rows


def _momentum_used(name: str, hook, it: int) -> Optional[float]:
    if name == 'mmcv':
        return hook.effective_momentum(it) if it % hook.interval == 0 else None
    if name == 'mmdet':
        return hook.momentum_fun(it) if (it + 1) % hook.interval == 0 else None
    steps = int(hook.ema_model.steps)
    if steps == 0:
        return 1.0  # the first update is a copy
    return hook.ema_model.momentum if steps % hook.ema_model.interval == 0 else None


def generations_table(epochs: int = 3, iters_per_epoch: int = 4) -> str:
    """Part 1: each generation's momentum and EMA of ``fc.weight[0, 0]`` per iteration."""
    hooks: Dict[str, object] = {
        'mmcv': MmcvEMAHook(momentum=0.2, interval=1, warm_up=4),
        'mmdet': ExpMomentumEMAHook(momentum=0.2, total_iter=4),
        'mmengine': MmengineEMAHook(momentum=0.2),
    }
    results = {name: run_generation(name, hook, epochs, iters_per_epoch)
               for name, hook in hooks.items()}
    lines = ['compat-ema demo: TinyModel, SGD(lr=0.1, momentum=0.9), '
             f'{epochs} epochs x {iters_per_epoch} iters, momentum 0.2',
             '  mmcv EMAHook(warm_up=4) | mmdet ExpMomentumEMAHook(total_iter=4) | '
             'mmengine EMAHook (ExponentialMovingAverage)',
             f'{"iter":>4} | {"mmcv m":>8} {"mmcv ema":>10} | {"mmdet m":>8} {"mmdet ema":>10} | '
             f'{"mmeng m":>8} {"mmeng ema":>10}']
    for it in range(epochs * iters_per_epoch):
        cells = []
        for name in hooks:
            used, ema = results[name][it]
            m = '-' if used is None else ('copy' if name == 'mmengine' and used == 1.0 else f'{used:.4f}')
            cells.append(f'{m:>8} {ema:>10.6f}')
        lines.append(f'{it:>4} | ' + ' | '.join(cells))
    return '\n'.join(lines)


def main(epochs: int = 3, iters_per_epoch: int = 4, out: Optional[str] = 'compat-ema-demo',
         force: bool = False) -> str:
    """Run the demo, print it and return the printed text.

    ``out=None`` runs part 1 only (nothing written). Runs on one intra-op
    thread: the tensors are tiny, and thread pools only add contention.
    """
    if out is not None:  # refuse a foreign directory before doing anything
        from .demo_showcase import prepare_out
        out = prepare_out(out, force=force)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text = generations_table(epochs, iters_per_epoch)
        print(text)
        if out is not None:
            from .demo_showcase import showcase
            print()
            more = showcase(out, force=force)
            text += '\n\n' + more
    finally:
        torch.set_num_threads(threads)
    return text
