"""Migrated configs load where only mmengine is installed (issue 16, item 3).

``tox -e mmengine`` has torch 2.13.0 + mmengine 0.10.7 and no mmcv 1.x, as every mmengine /
mmcv 2.x install. Every config that ``compat-ema migrate`` writes (--exact and --native) must
load with mmengine's own ``Config.fromfile``, which imports ``custom_imports``, and every hook
in it must build from mmengine's ``HOOKS`` registry.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from compat_ema.migrate import migrate_config, write_migration

FIX = Path(__file__).resolve().parents[1] / 'fixtures' / 'configs'
CONFIGS = sorted(str(p.relative_to(FIX)) for p in FIX.rglob('*.py')
                 if 'broken' not in p.parts and '_base_' not in p.parts
                 and 'ema' in p.read_text().lower() and 'custom_hooks' in p.read_text())

# a legacy config that used compat_ema's own mmcv integration, as README recommends
COMPAT_INTEGRATION = '''\
runner = dict(type='EpochBasedRunner', max_epochs=12)
custom_imports = dict(imports=['compat_ema.integrations.mmcv'], allow_failed_imports=False)
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CompatExpMomentumEMAHook', momentum=0.0001, priority=49),
]
'''


def test_this_environment_has_no_mmcv_1x():
    spec = importlib.util.find_spec('mmcv')
    if spec is not None:
        import mmcv
        assert not mmcv.__version__.startswith('1.'), 'tox -e mmengine must not have mmcv 1.x'
    import mmengine
    assert mmengine.__version__ == '0.10.7'


def _load_and_build(path):
    from mmengine.config import Config
    from mmengine.registry import HOOKS
    import mmengine.hooks  # noqa: F401  (registers mmengine's hooks)
    cfg = Config.fromfile(str(path))        # imports custom_imports, as the Runner does
    built = []
    for entry in cfg.get('custom_hooks', []):
        if 'EMA' not in entry['type']:   # the codebase's own hooks (mmdet's): not registered here
            continue
        built.append(HOOKS.build(dict(entry)))
    return cfg, built


@pytest.mark.parametrize('mode', ['exact', 'native'])
def test_config_that_imported_the_mmcv_integration(tmp_path, mode):
    src = tmp_path / 'legacy.py'
    src.write_text(COMPAT_INTEGRATION)
    out = tmp_path / f'legacy_{mode}.py'
    write_migration(migrate_config(str(src), mode, out=str(out)), str(out))
    cfg, built = _load_and_build(out)
    assert 'compat_ema.integrations.mmcv' not in cfg.get('custom_imports', {}).get('imports', [])
    assert [type(h).__name__ for h in built] == ['EMAHook']
    assert built[0].ema_cfg['type'] == ('LegacyExpMomentumEMA' if mode == 'exact' else
                                        built[0].ema_cfg['type'])


def test_import_from_a_base_file_is_dropped_too(tmp_path):
    (tmp_path / 'base.py').write_text(COMPAT_INTEGRATION)
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './base.py'\nrunner = dict(max_epochs=24)\n")
    out = tmp_path / 'child_exact.py'
    write_migration(migrate_config(str(child), 'exact', out=str(out)), str(out))
    cfg, built = _load_and_build(out)
    assert cfg.runner.max_epochs == 24 and len(built) == 1


@pytest.mark.parametrize('mode', ['exact', 'native'])
@pytest.mark.parametrize('rel', CONFIGS)
def test_every_fixture_config_migrates_to_a_loadable_config(tmp_path, rel, mode):
    dst = tmp_path / 'configs'
    shutil.copytree(FIX, dst)
    src = dst / rel
    out = src.with_name(src.stem + f'_{mode}.py')
    mig = migrate_config(str(src), mode, out=str(out))
    assert mig.changed
    write_migration(mig, str(out))
    _, built = _load_and_build(out)
    assert any(type(h).__name__ in ('EMAHook', 'LegacyEMAHook') for h in built)
