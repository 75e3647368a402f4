"""The mmengine plugin from a real mmengine config file (issue 5 acceptance 3), its names, and
compat hooks inside the real mmcv registries; run in a fresh interpreter so that the registration
provably comes from ``custom_imports`` in ``Config.fromfile``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runner_kit import real_runners  # noqa: F401  (fixture)

HERE = Path(__file__).resolve().parent
CONFIG = HERE / 'configs' / 'legacy_ema_config.py'

SCRIPT = textwrap.dedent(r'''
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from _pytest.monkeypatch import MonkeyPatch
    import runner_kit as K
    K.prepare(MonkeyPatch())
    from mmengine.config import Config
    from mmengine.registry import HOOKS, MODELS
    out = {{}}
    out['before'] = sorted(n for n in MODELS.module_dict if n.startswith(('Legacy', 'Compat')))
    out['plugin_before'] = 'compat_ema.integrations.mmengine_plugin' in sys.modules
    cfg = Config.fromfile({config!r})
    out['plugin_after'] = 'compat_ema.integrations.mmengine_plugin' in sys.modules
    out['models'] = sorted(n for n in MODELS.module_dict if n.startswith(('Legacy', 'Compat')))
    out['hooks'] = sorted(n for n in HOOKS.module_dict if n.startswith(('Legacy', 'Compat')))
    import mmengine.hooks, mmengine.model
    out['own'] = [HOOKS.get('EMAHook') is mmengine.hooks.EMAHook,
                  MODELS.get('ExponentialMovingAverage') is mmengine.model.ExponentialMovingAverage,
                  MODELS.get('MomentumAnnealingEMA') is mmengine.model.MomentumAnnealingEMA]
    from compat_ema.core.wrappers import is_wrapper
    from mmengine.model import MMSeparateDistributedDataParallel as Sep
    out['wrapper'] = is_wrapper(Sep.__new__(Sep), 'mmengine')
    # train from the config, and the legacy mmdet 2.x run it replaces
    w, b = K.make_weights(3, True, 7), K.make_batches(3, 7)
    tmp = Path({tmp!r})
    engine = K.run_engine(tmp / 'engine', custom_hooks=cfg.custom_hooks, weights=w, batches=b,
                          max_epochs=cfg.train_cfg.max_epochs)
    out['ema_type'] = type(engine.hooks[[type(h).__name__ for h in engine.hooks].index('EMAHook')]
                           .ema_model).__name__
    K.run_mmcv(tmp / 'mmcv', hook_cfgs=[dict(type='ExpMomentumEMAHook', momentum=0.0001,
                                             priority=49)], weights=w, batches=b, max_epochs=2)
    diffs = []
    for e in (1, 2):
        a = K.load(tmp / 'engine' / f'epoch_{{e}}.pth')['state_dict']
        m = K.load(tmp / 'mmcv' / f'epoch_{{e}}.pth')['state_dict']
        diffs += K.diff(a, {{k: m[k] for k in a}}, f'epoch_{{e}}')
    out['diffs'] = diffs
    print('RESULT ' + json.dumps(out))
''')


def test_plugin_from_config_file(tmp_path):
    code = SCRIPT.format(here=str(HERE), config=str(CONFIG), tmp=str(tmp_path))
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(tmp_path))
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len('RESULT '):])
    assert out['before'] == [] and not out['plugin_before']
    assert out['plugin_after']
    assert {'LegacyMMCVEMA', 'LegacyMMDetEMA', 'LegacyExpMomentumEMA', 'LegacyLinearMomentumEMA',
            'CompatExponentialMovingAverage', 'CompatMomentumAnnealingEMA',
            'CompatStochasticWeightAverage'} <= set(out['models'])
    assert {'LegacyEMAHook', 'CompatEMAHook'} <= set(out['hooks'])
    assert out['own'] == [True, True, True]  # mmengine's own names untouched
    assert out['wrapper'] is True
    assert out['ema_type'] == 'LegacyExpMomentumEMA'
    assert out['diffs'] == []  # the config's EMA equals the legacy YOLOX-style EMA, bitwise


def test_mmcv_registry_names_do_not_clobber(real_runners):
    from mmcv.runner import HOOKS, EMAHook as MMCVEMAHook
    import compat_ema.integrations.mmcv as integ
    import upstream
    assert HOOKS.get('EMAHook') is MMCVEMAHook
    assert HOOKS.get('ExpMomentumEMAHook') is upstream.mmdet_ema().ExpMomentumEMAHook
    assert integ.install() == {'CompatEMAHook': integ.EMAHook,
                               'CompatBaseEMAHook': integ.BaseEMAHook,
                               'CompatExpMomentumEMAHook': integ.ExpMomentumEMAHook,
                               'CompatLinearMomentumEMAHook': integ.LinearMomentumEMAHook,
                               'CompatExponentialMovingAverageHook':
                                   integ.ExponentialMovingAverageHook}
    for name, cls in integ.REGISTERED.items():
        assert HOOKS.get(name) is cls
    from compat_ema.core.wrappers import is_wrapper
    from mmcv.parallel.distributed_deprecated import MMDistributedDataParallel as Old
    assert is_wrapper(Old.__new__(Old), 'mmcv')  # not a torch DDP subclass: learned from mmcv


def test_plugin_install_is_idempotent_and_stages(real_runners):
    import compat_ema.integrations.mmengine_plugin as plugin
    from mmengine.hooks import Hook
    again = plugin.install()
    assert again['hooks']['LegacyEMAHook'] is plugin.LegacyEMAHook
    hook = plugin.LegacyEMAHook(ema_type='LegacyMMCVEMA')
    assert isinstance(hook, Hook)
    assert 'after_train_epoch' in hook.get_triggered_stages()
    assert 'after_val_epoch' in hook.get_triggered_stages()  # overridden (to not swap)
    from compat_ema.mmengine import EMAHook as PlainEMAHook
    plain = PlainEMAHook(momentum=0.01)
    assert plugin.as_mmengine_hook(plain) is plain and isinstance(plain, Hook)
    assert isinstance(plain, PlainEMAHook) and type(plain) is plugin.CompatEMAHook


def test_mmcv_config_file_custom_hooks(real_runners, tmp_path):
    """An mmcv 1.x config naming the compat hook in custom_hooks (custom_imports loads the
    integration) trains in the real EpochBasedRunner like the upstream hook named the same way."""
    from mmcv import Config
    from runner_kit import MMCV_SKIP, compare_work_dirs, make_batches, make_weights, run_mmcv
    path = tmp_path / 'mmcv_cfg.py'
    path.write_text(textwrap.dedent('''
        custom_imports = dict(imports=['compat_ema.integrations.mmcv'], allow_failed_imports=False)
        custom_hooks = [dict(type='CompatLinearMomentumEMAHook', momentum=0.5, warm_up=3,
                             interval=2, priority=49)]
    '''))
    cfg = Config.fromfile(str(path))
    std = dict(weights=make_weights(3, True, 51), batches=make_batches(3, 51), max_epochs=2)
    run_mmcv(tmp_path / 'compat', hook_cfgs=cfg.custom_hooks, **std)
    real = [dict(h, type='LinearMomentumEMAHook') for h in cfg.custom_hooks]
    run_mmcv(tmp_path / 'real', hook_cfgs=real, **std)
    d = compare_work_dirs(tmp_path / 'real', tmp_path / 'compat', MMCV_SKIP)
    assert not d, '\n'.join(d[:10])
