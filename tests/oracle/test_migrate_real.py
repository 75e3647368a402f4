"""``compat-ema migrate`` against the real frameworks (issue 7 acceptance).

For every fixture config (shaped like upstream mmdet 2.x YOLOX, an mmdet 2.x
LinearMomentumEMAHook detector, mmcls/mmseg with mmcv's EMAHook):

* the legacy config's EMA hooks train a model in the real mmcv 1.6
  ``EpochBasedRunner`` with the real mmcv / mmdet 2.28 hooks;
* ``--exact`` and ``--native`` outputs (written to another directory, so the
  ``_base_`` rewriting is exercised) load with the real mmengine
  ``Config.fromfile`` (``--exact``: which imports compat's plugin through
  ``custom_imports``) and their EMA hooks train the same model, data and SGD
  with the real mmengine ``Runner``;
* ``--exact``: the EMA weights in every epoch checkpoint are bitwise equal to
  the legacy run's; ``--native``: only mmengine's own averaged-model classes
  are used, and the EMA weights move.

The non-EMA hooks of the fixtures (YOLOXModeSwitchHook, SyncNormHook,
NumClassCheckHook) are mmdet's and not registered here; only the EMA entries
are handed to the runners. ``load_from``/``resume`` are checked as values
(the fixture's checkpoint path does not exist).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from runner_kit import (ema_hook_of, load, make_batches, make_weights, real_runners,  # noqa: F401
                        run_engine, run_mmcv)

FIX = Path(__file__).resolve().parents[1] / 'fixtures' / 'configs'
PLUGIN = 'compat_ema.integrations.mmengine_plugin'
EPOCHS = 3

CASES = [
    'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py',
    'mmdet2_yolox/yolox/yolox_tiny_8x8_300e_coco.py',
    'mmdet2_yolox/yolox/yolox_s_resume.py',
    'mmdet2_linear/retinanet_r50_fpn_linear_ema_1x_coco.py',
    'mmcls_ema/convnext-tiny_32xb128_in1k.py',
    'mmseg_ema/segformer_ema_160k.py',
]


def _ema_entries(hooks):
    from compat_ema.migrate import classify
    out = []
    for h in hooks:
        h = dict(h)
        if classify(h, 'mmcv' if 'ema_type' not in h else 'mmengine') is not None:
            out.append(h)
    return out


def _legacy_ema(ckpt_sd, entry, model_keys, param_keys):
    """The legacy run's EMA from a checkpoint: model keys at priority < 50, ema_* otherwise."""
    from mmcv.runner import get_priority
    tracked = param_keys if (entry['type'] == 'EMAHook' or entry.get('skip_buffers')) else model_keys
    before_ckpt = get_priority(entry.get('priority', 'NORMAL')) < 50
    out = {}
    for k in tracked:
        if not ckpt_sd[k].is_floating_point():
            continue
        out[k] = ckpt_sd[k] if before_ckpt else ckpt_sd['ema_' + k.replace('.', '_')]
    return out


@pytest.mark.parametrize('rel', CASES)
def test_migrated_configs_with_the_real_frameworks(real_runners, tmp_path, rel):  # noqa: F811
    from mmengine.config import Config
    from compat_ema.cli import main as cli
    from compat_ema.migrate import load_config

    shutil.copytree(FIX, tmp_path / 'configs')
    src = tmp_path / 'configs' / rel
    legacy_hooks = _ema_entries(load_config(str(src)).cfg['custom_hooks'])
    assert len(legacy_hooks) == 1
    for h in legacy_hooks:
        h.pop('resume_from', None)  # the fixture's path does not exist; resume is checked below

    weights = make_weights(3, True, seed=7)
    batches = make_batches(4, seed=8)
    mmcv_runner = run_mmcv(tmp_path / 'mmcv', weights, batches, legacy_hooks, max_epochs=EPOCHS)
    model_keys = [k for k in mmcv_runner.model.state_dict() if not k.startswith('ema_')]
    param_keys = [k for k, _ in mmcv_runner.model.named_parameters()]

    for mode in ('exact', 'native'):
        out = tmp_path / 'migrated' / f'{mode}.py'
        assert cli(['migrate', str(src), f'--{mode}', '-o', str(out), '--iters', '100',
                    '--sim-iters', '20']) == 0
        cfg = Config.fromfile(str(out))  # the real mmengine reader, _base_ files included
        assert cfg.model['type'] in ('YOLOX', 'RetinaNet', 'ImageClassifier', 'EncoderDecoder')
        if 'resume' in rel:
            assert cfg.load_from == 'work_dirs/yolox_s/epoch_100.pth' and cfg.resume is True
        entries = _ema_entries([dict(h) for h in cfg.custom_hooks])
        assert len(entries) == 1 and entries[0]['type'] == 'EMAHook'
        if mode == 'exact':
            from mmengine.utils import import_modules_from_strings
            assert cfg.custom_imports['imports'] == [PLUGIN]
            assert cfg.custom_imports['allow_failed_imports'] is False
            import_modules_from_strings(**cfg.custom_imports)  # what the Runner does with it
            assert PLUGIN in sys.modules
            assert entries[0]['ema_type'].startswith('Legacy')
        else:
            assert 'custom_imports' not in cfg
        runner = run_engine(tmp_path / mode, weights, batches, entries, max_epochs=EPOCHS)
        ema_model = ema_hook_of(runner).ema_model
        if mode == 'native':
            assert type(ema_model).__module__.startswith('mmengine.model'), type(ema_model)
        same = []
        for epoch in range(1, EPOCHS + 1):
            legacy = _legacy_ema(load(tmp_path / 'mmcv' / f'epoch_{epoch}.pth')['state_dict'],
                                 legacy_hooks[0], model_keys, param_keys)
            engine = load(tmp_path / mode / f'epoch_{epoch}.pth')['state_dict']
            same.append(all(torch.equal(engine[k], v) for k, v in legacy.items()))
        if mode == 'exact':
            assert all(same), f'{rel}: --exact EMA differs from the legacy run at epochs ' \
                              f'{[i + 1 for i, s in enumerate(same) if not s]}'
        else:
            assert not all(same), f'{rel}: --native unexpectedly bitwise equal'


def test_exact_with_legacy_swap_points(real_runners, tmp_path):  # noqa: F811
    """--exact --legacy-swap: LegacyEMAHook from the real Config; same EMA, and the model holds
    the EMA weights after training, as after the legacy run."""
    from mmengine.config import Config
    from compat_ema.cli import main as cli
    from compat_ema.migrate import load_config

    shutil.copytree(FIX, tmp_path / 'configs')
    src = tmp_path / 'configs' / 'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py'
    legacy_hooks = _ema_entries(load_config(str(src)).cfg['custom_hooks'])
    weights, batches = make_weights(3, True, seed=3), make_batches(4, seed=4)
    mmcv_runner = run_mmcv(tmp_path / 'mmcv', weights, batches, legacy_hooks, max_epochs=EPOCHS)
    out = tmp_path / 'swap.py'
    assert cli(['migrate', str(src), '--legacy-swap', '-o', str(out), '--sim-iters', '20']) == 0
    entries = _ema_entries([dict(h) for h in Config.fromfile(str(out)).custom_hooks])
    assert entries[0]['type'] == 'LegacyEMAHook'
    runner = run_engine(tmp_path / 'engine', weights, batches, entries, max_epochs=EPOCHS)
    legacy_model = {k: v for k, v in mmcv_runner.model.state_dict().items()
                    if not k.startswith('ema_')}
    engine_model = runner.model.state_dict()
    assert all(torch.equal(engine_model[k], v) for k, v in legacy_model.items())
