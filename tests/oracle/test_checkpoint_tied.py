"""Tied weights through ``convert``, resumed by the REAL runners (issue 16, item 1).

A model whose ``fc2.weight`` IS ``fc1.weight`` is trained by the real mmcv 1.6 EpochBasedRunner
with the real mmcv ``EMAHook`` (priority NORMAL and 49) or mmdet's ``ExpMomentumEMAHook``
(``skip_buffers=True``): both track ``named_parameters()``, so one ``ema_fc1_weight`` buffer
serves both names. ``epoch_1.pth`` converted to mmengine and resumed by the real mmengine
``Runner`` with compat_ema's legacy-numerics averaged model must continue bitwise like the
uninterrupted legacy run: raw weights, BN buffers and EMA. The other way, an mmengine file of
the tied model converted to mmcv and resumed through the real hook's ``resume_from``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compat_ema import checkpoint as C
from runner_kit import QUIET, ema_hook_of, loader, make_batches, real_runners  # noqa: F401

PARAMS = ['fc1.weight', 'fc1.bias', 'bn.weight', 'bn.bias', 'fc2.weight', 'fc2.bias',
          'head.weight', 'head.bias']
BUFFERS = ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']


def bits(t):
    return t.dtype, tuple(t.shape), t.detach().reshape(-1).contiguous().view(torch.uint8).tolist()


def _layers(m):
    m.fc1 = nn.Linear(4, 4)
    m.bn = nn.BatchNorm1d(4)
    m.fc2 = nn.Linear(4, 4)
    m.fc2.weight = m.fc1.weight          # tied: one tensor, two state_dict names
    m.head = nn.Linear(4, 2)


def _forward(m, x):
    return m.head(torch.relu(m.fc2(torch.relu(m.bn(m.fc1(x))))))


class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        _layers(self)

    def forward(self, x):
        return _forward(self, x)

    def train_step(self, data_batch, optimizer=None, **kwargs):
        x, y = data_batch
        loss = ((self(x) - y) ** 2).mean()
        return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=len(x))


def _weights():
    torch.manual_seed(3)
    return TiedNet().state_dict()


def run_mmcv(work_dir, batches, hook, max_epochs, resume_from=None):
    import mmcv.runner as mr
    model = TiedNet()
    model.load_state_dict(_weights())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    work_dir.mkdir(parents=True, exist_ok=True)
    runner = mr.EpochBasedRunner(model, optimizer=opt, work_dir=str(work_dir), logger=QUIET,
                                 max_epochs=max_epochs)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                   checkpoint_config=dict(interval=1), log_config=None,
                                   custom_hooks_config=[dict(hook)])
    runner.run([loader(batches)], [('train', 1)])
    return runner


def run_engine(work_dir, batches, hook, max_epochs, load_from=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class EngineTied(BaseModel):
        def __init__(self):
            super().__init__()
            _layers(self)

        def forward(self, x, y=None, mode='tensor'):
            out = _forward(self, x)
            return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else [out]

    model = EngineTied()
    model.load_state_dict(_weights())
    work_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(
        model=model, work_dir=str(work_dir), default_scope='mmengine',
        train_dataloader=loader(batches), train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=10 ** 6)),
        custom_hooks=[hook], load_from=load_from, resume=load_from is not None,
        randomness=dict(seed=0), log_level='ERROR',
        experiment_name=f'tied_{work_dir.name}_{id(work_dir)}')
    runner.train()
    return runner


def legacy_final(runner, tracked):
    """(raw, ema) after a finished mmcv epoch run: the last swap left the EMA in the model."""
    sd = runner.model.state_dict()
    ema = {k: sd[k] for k in PARAMS}
    raw = {k: sd['ema_' + tracked.get(k, k).replace('.', '_')] for k in PARAMS}
    return raw, ema, {k: sd[k] for k in BUFFERS}


def engine_final(runner):
    sd = runner.model.state_dict()
    ema = ema_hook_of(runner).ema_model.module.state_dict()
    return {k: sd[k] for k in PARAMS}, {k: ema[k] for k in PARAMS}, {k: sd[k] for k in BUFFERS}


def same(a, b, what):
    bad = [k for k in a if bits(a[k]) != bits(b[k])]
    assert not bad, f'{what}: {bad} differ'


CASES = {
    'mmcv_normal': (dict(type='EMAHook', momentum=0.2, warm_up=1),
                    dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1)),
    'mmcv_p49': (dict(type='EMAHook', momentum=0.2, warm_up=1, priority=49),
                 dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1)),
    'mmdet_skip1_p49': (dict(type='ExpMomentumEMAHook', momentum=0.2, total_iter=5,
                             skip_buffers=True, priority=49),
                        dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.2,
                             total_iter=5, skip_buffers=True)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_tied_legacy_to_mmengine_resume_is_bitwise(real_runners, tmp_path, monkeypatch, case):
    legacy_hook, engine_hook = CASES[case]
    batches = make_batches(3, seed=5)
    full = run_mmcv(tmp_path / 'full', batches, legacy_hook, 2)
    run_mmcv(tmp_path / 'part', batches, legacy_hook, 1)
    src = tmp_path / 'part' / 'epoch_1.pth'
    sd = torch.load(src, map_location='cpu', weights_only=True)['state_dict']
    assert 'ema_fc2_weight' not in sd and 'ema_fc1_weight' in sd   # one buffer for the pair
    conv = tmp_path / 'converted.pth'
    res = C.convert(src, conv, to='mmengine', source_priority=legacy_hook.get('priority', 50))
    assert any('tied weights' in e for e in res.evidence)
    raw_ref, ema_ref, buf_ref = legacy_final(full, {'fc2.weight': 'fc1.weight'})
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    eng = run_engine(tmp_path / 'eng', batches, engine_hook, 2, load_from=str(conv))
    assert (eng.iter, eng.epoch) == (6, 2)
    raw, ema, buf = engine_final(eng)
    same(raw_ref, raw, 'raw weights')
    same(buf_ref, buf, 'BN buffers')
    same(ema_ref, ema, 'EMA')


def test_tied_mmengine_to_mmcv_resume_is_bitwise(real_runners, tmp_path, monkeypatch):
    batches = make_batches(3, seed=5)
    hook = dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1)
    full = run_engine(tmp_path / 'full', batches, hook, 2)
    run_engine(tmp_path / 'part', batches, hook, 1)
    conv = tmp_path / 'converted.pth'
    C.convert(tmp_path / 'part' / 'epoch_1.pth', conv, to='mmcv')
    assert 'ema_fc2_weight' not in torch.load(conv, weights_only=True)['state_dict']
    raw_ref, ema_ref, buf_ref = engine_final(full)
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    mm = run_mmcv(tmp_path / 'mmcv', batches,
                  dict(type='EMAHook', momentum=0.2, warm_up=1, resume_from=str(conv)), 2)
    raw, ema, buf = legacy_final(mm, {'fc2.weight': 'fc1.weight'})
    same(raw_ref, raw, 'raw weights')
    same(buf_ref, buf, 'BN buffers')
    same(ema_ref, ema, 'EMA')


def test_mmdet_skip_buffers_false_swaps_a_tied_tensor_twice(real_runners, tmp_path):
    """The upstream defect behind the refusal: mmdet's BaseEMAHook(skip_buffers=False) tracks
    state_dict(), which names the tied tensor twice. Its epoch-end swap runs once per name on the
    one tensor: in epoch_1.pth (priority 49, saved after the swap) one buffer holds the raw
    weights and the other the EMA, and after the swap back at the next epoch's start the model
    holds the EMA, not the raw weights. compat_ema refuses such a file."""
    from mmcv.runner import HOOKS, Hook
    seen = {}

    class Probe(Hook):
        def before_train_epoch(self, runner):
            if runner.epoch == 1:
                seen['fc1'] = runner.model.fc1.weight.detach().clone()

    batches = make_batches(3, seed=5)
    hook = dict(type='ExpMomentumEMAHook', momentum=0.2, total_iter=5, priority=49)
    import mmcv.runner as mr
    model = TiedNet()
    model.load_state_dict(_weights())
    runner = mr.EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                 work_dir=str(tmp_path), logger=QUIET, max_epochs=2)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                   checkpoint_config=dict(interval=1), log_config=None,
                                   custom_hooks_config=[dict(hook)])
    runner.register_hook(Probe(), priority='LOWEST')
    assert 'ExpMomentumEMAHook' in HOOKS.module_dict
    runner.run([loader(batches)], [('train', 1)])
    sd = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=True)['state_dict']
    model_w, buf1, buf2 = sd['fc1.weight'], sd['ema_fc1_weight'], sd['ema_fc2_weight']
    assert bits(buf2) == bits(model_w) and bits(buf1) != bits(model_w)   # EMA twice, raw once
    assert bits(seen['fc1']) == bits(model_w)          # epoch 2 starts from the EMA weights
    with pytest.raises(C.CheckpointError, match='tied weights.*disagree'):
        C.convert(tmp_path / 'epoch_1.pth', tmp_path / 'x.pth', to='mmengine')
