"""``ModuleSnapshot``: a cheap proof that a module tree's walk would yield the same objects,
and the mmengine fast path that skips upstream's per-call walks behind it.

Every structural change a walk can see must invalidate the snapshot; the averaged
model must then behave exactly as the per-call (upstream-shaped) path does.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compat_ema.core import kernels
from compat_ema.core.structure import ModuleSnapshot
from helpers import torch_load


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))


MUTATIONS = {
    'replace parameter': lambda m: setattr(m[0], 'weight', nn.Parameter(torch.ones(4, 3))),
    'dict-level parameter swap': lambda m: m[0]._parameters.__setitem__('bias', nn.Parameter(torch.ones(4))),
    'delete parameter': lambda m: delattr(m[0], 'bias'),
    'add parameter': lambda m: m[1].register_parameter('extra', nn.Parameter(torch.ones(1))),
    'replace buffer': lambda m: setattr(m[1], 'running_var', m[1].running_var * 2),
    'add buffer': lambda m: m[2][0].register_buffer('b', torch.zeros(2)),
    'replace submodule': lambda m: m[2].__setitem__(1, nn.Linear(4, 2)),
    'add submodule': lambda m: m[2].add_module('more', nn.Linear(2, 2)),
    'rename key': lambda m: m[0]._parameters.__setitem__('w2', m[0]._parameters.pop('weight')),
    'reorder keys': lambda m: m[0]._parameters.__setitem__('weight', m[0]._parameters.pop('weight')),
    'replace dict': lambda m: setattr(m[1], '_buffers', dict(m[1]._buffers)),
    'change class': lambda m: setattr(m[2][0], '__class__', nn.ReLU6),
}


def test_snapshot_unchanged_without_mutation():
    m = _model()
    snap = ModuleSnapshot.take(m)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1)  # contents and .data are not structure
        m[0].weight.data = torch.zeros(4, 3)
    assert snap.unchanged()


@pytest.mark.parametrize('name', list(MUTATIONS))
def test_every_structural_change_invalidates_the_snapshot(name):
    m = _model()
    snap = ModuleSnapshot.take(m)
    MUTATIONS[name](m)
    assert not snap.unchanged(), name


def test_modules_overriding_a_walk_get_no_snapshot():
    class Custom(nn.Linear):
        def named_parameters(self, *a, **k):
            return super().named_parameters(*a, **k)

    assert ModuleSnapshot.take(nn.Sequential(Custom(2, 2))) is None


def _ema_run(fast, name):
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage
    kernels.set_fast_path(fast)
    try:
        model = _model()
        ema = ExponentialMovingAverage(model, momentum=0.25)
        out = []
        for step in range(5):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.5 + step)
                model[1].running_mean.add_(1.0)
            if step == 2:
                MUTATIONS[name](model)
            try:
                ema.update_parameters(model)
            except Exception as exc:  # upstream fails the same way (e.g. a deleted key)
                out.append(type(exc).__name__)
                break
            out.append({k: v.clone() for k, v in ema.state_dict().items()})
        return out
    finally:
        kernels.set_fast_path(True)


@pytest.mark.parametrize('name', [n for n in MUTATIONS if n != 'change class'])
def test_averaged_model_follows_every_structural_change(name):
    fast, slow = _ema_run(True, name), _ema_run(False, name)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        if isinstance(a, str):
            assert a == b
            continue
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_walks_are_skipped_while_the_structure_holds(monkeypatch):
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage
    model = _model()
    ema = ExponentialMovingAverage(model, momentum=0.25)
    ema.update_parameters(model)
    ema.update_parameters(model)  # plan confirmed by a walk, snapshot taken
    walks = []
    real = nn.Module.named_parameters

    def counting(self, *a, **k):
        walks.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(nn.Module, 'named_parameters', counting)
    ema.update_parameters(model)
    assert not walks  # no walk: the snapshot proved the structure unchanged
    model[0].weight = nn.Parameter(torch.ones(4, 3))
    ema.update_parameters(model)
    assert walks  # a change: back to the walk


def test_pickling_the_averaged_model_leaves_the_plan_behind():
    import copy
    import io
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage
    model = _model()
    ema = ExponentialMovingAverage(model, momentum=0.25)
    ema.update_parameters(model)
    ema.update_parameters(model)
    assert '_compat_plan' in ema.__dict__
    clone = copy.deepcopy(ema)
    assert '_compat_plan' not in clone.__dict__
    buf = io.BytesIO()
    torch.save(ema, buf)
    buf.seek(0)
    loaded = torch_load(buf, weights_only=False)
    assert '_compat_plan' not in loaded.__dict__
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
