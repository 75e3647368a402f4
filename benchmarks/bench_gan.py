"""Per-call time of the GAN-family EMA hooks: compat_ema vs the real upstream files, side by side.

Run in the oracle env (it needs the extracted mmedit 0.16.1 / mmagic 1.2.0 files)::

    COMPAT_EMA_NATIVE_DIR=.tox/oracle/native .tox/oracle/bin/python benchmarks/bench_gan.py

For a small and a Real-ESRGAN-sized generator (conv stacks with BatchNorm and a frozen layer),
times ``after_train_iter`` of the real hook and of compat_ema's, alternating the two call by call
(so both see the same machine load), and prints the median per-call time of each and their ratio
(compat / upstream; < 1.05 is the target: the same tensor operations, no fast path).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'tests' / 'oracle'))
sys.path.insert(0, str(HERE.parent))


def generator(channels: int, blocks: int) -> nn.Module:
    layers = []
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                   nn.LeakyReLU(0.2)]
    head = nn.Conv2d(channels, 3, 3, padding=1)
    head.requires_grad_(False)
    return nn.Sequential(*layers, head)


class Pair(nn.Module):
    def __init__(self, channels, blocks):
        super().__init__()
        torch.manual_seed(0)
        self.generator = generator(channels, blocks)
        self.generator_ema = generator(channels, blocks)


def bench(real_cls, ours_cls, family, channels, blocks, calls):
    kw = dict(module_keys='generator_ema', interval=1,
              interp_cfg=dict(momentum=0.999 if family == 'mmedit' else 0.001))
    runs = {}
    for name, cls in (('upstream', real_cls), ('compat', ours_cls)):
        model = Pair(channels, blocks)
        hook = cls(**kw)
        runner = types.SimpleNamespace(model=model, iter=0)
        hook.before_run(runner)
        runs[name] = (hook, runner)
    times = {'upstream': [], 'compat': []}
    for i in range(calls):
        order = ('upstream', 'compat') if i % 2 == 0 else ('compat', 'upstream')
        for name in order:
            hook, runner = runs[name]
            t0 = time.perf_counter()
            if family == 'mmedit':
                hook.after_train_iter(runner)
            else:
                hook.after_train_iter(runner, i)
            times[name].append(time.perf_counter() - t0)
            runner.iter += 1
    up, ours = statistics.median(times['upstream']), statistics.median(times['compat'])
    n = sum(p.numel() for p in runs['compat'][1].model.generator.parameters())
    print(f'{family:7s} {n / 1e6:6.2f} M params  upstream {up * 1e3:8.3f} ms  '
          f'compat {ours * 1e3:8.3f} ms  ratio {ours / up:5.3f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--calls', type=int, default=60)
    args = parser.parse_args()
    import gan_native
    from compat_ema.mmagic import ExponentialMovingAverageHook as MMagic
    from compat_ema.mmedit import ExponentialMovingAverageHook as MMEdit
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for channels, blocks in ((16, 4), (64, 23)):
            bench(gan_native.mmedit_cls(), MMEdit, 'mmedit', channels, blocks, args.calls)
            bench(gan_native.mmagic_cls(), MMagic, 'mmagic', channels, blocks, args.calls)


if __name__ == '__main__':
    main()
