"""``compat-ema demo``: three EMA generations side by side, then a legacy config migrated.

Part 1 (:func:`generations_table`): a small regression model
(:class:`DemoRegressor`: Linear, BatchNorm, ReLU, Linear) learns a noisy linear
map with the same data and optimizer under each generation's EMA; the table
shows, per iteration, the training loss, the raw ``head.weight[0, 0]``, and the
effective momentum each generation used (``-`` when it skipped the update,
``copy`` for mmengine's first update) with its EMA of that weight.

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
from .testing.models import TinyModel as HarnessModel


class DemoRegressor(HarnessModel):
    """``Linear(4, 16) -> BatchNorm1d(16) -> ReLU -> Linear(16, 3)``: the demo's model.

    It learns :func:`regression_samples` (a fixed linear map plus a little noise)
    with SGD(lr=0.05, momentum=0.9): the loss falls and the weights stay of order
    1, as in a real run. ``train_step``/``val_step`` come from the harness's
    :class:`~compat_ema.testing.TinyModel`, so the fake runners can train it.
    """

    def __init__(self, seed: Optional[int] = 0) -> None:
        nn.Module.__init__(self)
        if seed is not None:
            torch.manual_seed(seed)
        self.fc = nn.Linear(4, 16)
        self.bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 3)

    def forward(self, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None,
                mode: str = 'tensor'):
        out = self.head(torch.relu(self.bn(self.fc(inputs))))
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return out if mode == 'tensor' else [out]


#: the demo's optimizer settings (both parts, and the built-in legacy configs)
LR, SGD_MOMENTUM = 0.05, 0.9
#: samples per batch
BATCH = 8


def regression_samples(n: int, seed: int = 1) -> List[Dict[str, torch.Tensor]]:
    """``n`` samples ``inputs`` ~ N(0, 1)^4, ``targets = inputs @ W + 0.1 noise`` (W fixed)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, generator=g)
    x = torch.randn(n, 4, generator=g)
    y = x @ w + 0.1 * torch.randn(n, 3, generator=g)
    return [dict(inputs=x[i], targets=y[i]) for i in range(n)]


def _batches(n: int, seed: int = 1) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    samples = regression_samples(n * BATCH, seed)
    return [(torch.stack([s['inputs'] for s in samples[i * BATCH:(i + 1) * BATCH]]),
             torch.stack([s['targets'] for s in samples[i * BATCH:(i + 1) * BATCH]]))
            for i in range(n)]


def run_generation(name: str, hook, epochs: int, iters_per_epoch: int, seed: int = 0
                   ) -> List[Tuple[float, float, Optional[float], float]]:
    """Train :class:`DemoRegressor` under ``hook``; per iteration return (loss, raw
    ``head.weight[0, 0]``, momentum used or None, EMA of ``head.weight[0, 0]``)."""
    model = DemoRegressor(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=SGD_MOMENTUM)
    runner = SimpleRunner(model, max_iters=epochs * iters_per_epoch, max_epochs=epochs)
    data = _batches(epochs * iters_per_epoch)
    rows: List[Tuple[float, float, Optional[float], float]] = []
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
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
            raw = model.head.weight[0, 0].item()
            used = _momentum_used(name, hook, runner.iter)
            if name == 'mmengine':
                hook.after_train_iter(runner, batch_idx=runner.iter)
                ema = hook.ema_model.module.head.weight[0, 0].item()
            else:
                hook.after_train_iter(runner)
                ema = model.ema_head_weight[0, 0].item()  # type: ignore[index]
            rows.append((loss.item(), raw, used, ema))
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
    """Part 1: per iteration, the loss, the raw ``head.weight[0, 0]``, and each generation's
    momentum and EMA of that weight (the same data, seed and optimizer for all three)."""
    hooks: Dict[str, object] = {
        'mmcv': MmcvEMAHook(momentum=0.2, interval=1, warm_up=4),
        'mmdet': ExpMomentumEMAHook(momentum=0.2, total_iter=4),
        'mmengine': MmengineEMAHook(momentum=0.2),
    }
    results = {name: run_generation(name, hook, epochs, iters_per_epoch)
               for name, hook in hooks.items()}
    lines = [f'compat-ema demo: DemoRegressor (Linear-BN-ReLU-Linear) learning a noisy linear map, '
             f'SGD(lr={LR}, momentum={SGD_MOMENTUM}), batches of {BATCH}, {epochs} epochs x '
             f'{iters_per_epoch} iters, EMA momentum 0.2',
             '  mmcv EMAHook(warm_up=4) | mmdet ExpMomentumEMAHook(total_iter=4) | '
             'mmengine EMAHook (ExponentialMovingAverage)',
             '  m: the weight each generation gave the new weights at that iteration '
             "(-: no update, copy: mmengine's first update)",
             '  the same training for all three: loss and raw head.weight[0,0] are shared',
             f'{"iter":>4} {"loss":>7} {"raw w":>8} | {"mmcv m":>7} {"EMA w":>8} | '
             f'{"mmdet m":>7} {"EMA w":>8} | {"mmeng m":>7} {"EMA w":>8}']
    for it in range(epochs * iters_per_epoch):
        loss, raw = results['mmcv'][it][:2]
        cells = []
        for name in hooks:
            _, _, used, ema = results[name][it]
            m = '-' if used is None else ('copy' if name == 'mmengine' and used == 1.0 else f'{used:.4f}')
            cells.append(f'{m:>7} {ema:>8.4f}')
        lines.append(f'{it:>4} {loss:>7.4f} {raw:>8.4f} | ' + ' | '.join(cells))
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
