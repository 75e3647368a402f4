"""The EMA side of a real mmcv checkpoint decided from the config text in its meta, as mmdet's
``train_detector`` saves it (``meta['config'] = cfg.pretty_text``), and refused without it
(issue 16, item 2). The converted file resumes bitwise in the real mmengine Runner."""
from __future__ import annotations

import pytest
import torch

from compat_ema import checkpoint as C
from runner_kit import ema_hook_of, make_batches, make_weights, real_runners, run_engine, \
    run_mmcv  # noqa: F401  (real_runners is a fixture)

PARAMS = ['fc1.weight', 'fc1.bias', 'bn.weight', 'bn.bias', 'fc2.weight', 'fc2.bias']


def bits(t):
    return t.dtype, tuple(t.shape), t.detach().reshape(-1).contiguous().view(torch.uint8).tolist()


@pytest.mark.parametrize('priority', [None, 49, 'ABOVE_NORMAL'])
def test_side_from_the_real_pretty_text(real_runners, tmp_path, monkeypatch, priority):
    import mmcv.utils.config as mmcv_config
    from mmcv import Config
    from yapf.yapflib.yapf_api import FormatCode
    # mmcv 1.6 passes verify=True, which the yapf installed beside mmengine no longer takes
    monkeypatch.setattr(mmcv_config, 'FormatCode',
                        lambda *a, verify=None, **kw: FormatCode(*a, **kw))
    hook = dict(type='EMAHook', momentum=0.2, warm_up=1)
    if priority is not None:
        hook['priority'] = priority
    text = Config(dict(runner=dict(type='EpochBasedRunner', max_epochs=2),
                       custom_hooks=[dict(type='NumClassCheckHook'), hook])).pretty_text
    weights, batches = make_weights(3, True, seed=0), make_batches(3, seed=1)
    full = run_mmcv(tmp_path / 'full', weights, batches, [hook], max_epochs=2)
    run_mmcv(tmp_path / 'part', weights, batches, [hook], max_epochs=1,
             meta=dict(config=text, seed=0))
    src = tmp_path / 'part' / 'epoch_1.pth'
    bare = tmp_path / 'no_config.pth'
    ck = torch.load(src, weights_only=True)
    assert ck['meta']['config'] == text
    ck['meta'].pop('config')
    torch.save(ck, bare)
    with pytest.raises(C.CheckpointError, match='--source-priority'):
        C.convert(bare, tmp_path / 'x.pth', to='mmengine')
    conv = tmp_path / 'converted.pth'
    res = C.convert(src, conv, to='mmengine')
    assert any(e.startswith('EMA side') and 'meta.config' in e for e in res.evidence)
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    eng = run_engine(tmp_path / 'eng', weights, batches,
                     [dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.2, warm_up=1)],
                     max_epochs=2, load_from=str(conv), resume=True)
    sd = full.model.state_dict()       # after the last swap: model = EMA, ema_* = raw
    msd, esd = eng.model.state_dict(), ema_hook_of(eng).ema_model.module.state_dict()
    for k in PARAMS:
        assert bits(msd[k]) == bits(sd['ema_' + k.replace('.', '_')]), k
        assert bits(esd[k]) == bits(sd[k]), k
