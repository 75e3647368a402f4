"""docs/hooks.md "Plain PyTorch loop": both blocks run as written, and their EMA is checked
against an independent float64 recomputation of mmdet 2.x ExpMomentumEMAHook's formula."""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn as nn

from helpers import BN_COUNTS_IN_PLACE

README = Path(__file__).resolve().parents[1] / 'docs' / 'hooks.md'


def block(marker: str) -> str:
    m = re.search(rf'<!-- {marker} -->\s*```python\n(.*?)```', README.read_text(encoding='utf-8'),
                  re.S)
    assert m, f'docs/hooks.md lost its <!-- {marker} --> python block'
    return m.group(1)


def _reference_trajectory():
    """The same training without any hook (legacy swaps restore the raw weights every epoch)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = [(torch.randn(16, 4), torch.randn(16, 2)) for _ in range(5)]
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = []
    for _ in range(2):
        for x, y in data:
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return init, states


def test_plain_pytorch_blocks_run_and_match_float64():
    ns: dict = {}
    exec(compile(block('plain-pytorch-example'), 'docs/hooks.md:plain-pytorch-example', 'exec'), ns)
    init, states = _reference_trajectory()
    model, hook = ns['model'], ns['hook']
    final = model.state_dict()
    for key in ('0.weight', '1.running_mean', '3.bias'):
        e = init[key].double()
        for it, st in enumerate(states):  # (1-m)*exp(-(1+it)/total_iter)+m, skip_buffers=False
            m = (1 - 0.0001) * math.exp(-(1 + it) / 20) + 0.0001
            e = (1 - m) * e + m * st[key].double()
        # after the last after_train_epoch the model holds the EMA, ema_* the raw weights
        torch.testing.assert_close(final[key].double(), e, rtol=1e-5, atol=1e-6)
        assert torch.equal(final['ema_' + key.replace('.', '_')], states[-1][key])
    # integer entries swapped, never averaged; torch 1.8-1.10 BatchNorm rebinds its counter, so the
    # hook's swaps miss the live one (helpers.BN_COUNTS_IN_PLACE, as the real mmdet does there)
    assert int(final['1.num_batches_tracked']) == (0 if BN_COUNTS_IN_PLACE else 10)
    assert hook.momentum == 0.0001

    exec(compile(block('plain-pytorch-mmengine'), 'docs/hooks.md:plain-pytorch-mmengine', 'exec'),
         ns)
    ema_model = ns['hook'].ema_model
    with torch.no_grad():
        ema_model.module.eval()
        expected = ema_model.module(ns['data'][0][0])
    assert torch.equal(ns['ema_prediction'], expected)  # evaluated the EMA weights
    assert int(ema_model.steps) == len(ns['data'])
    assert not torch.equal(ema_model.module[0].weight, ns['model'][0].weight)  # raw back in
