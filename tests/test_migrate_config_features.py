"""mmcv 1.x ``Config`` features in ``compat-ema migrate`` (issue 16, items 3, 5, 6): each one
handled as mmcv's ``Config.fromfile`` handles it, or refused with a message naming it.

Expected values are what mmcv 1.x computes for these files (its ``_substitute_base_vars``,
``_substitute_predefined_vars`` and ``_merge_a_into_b`` rules, written out by hand here).
"""
from __future__ import annotations

import importlib.util
import json

import pytest

from compat_ema.cli import main as cli
from compat_ema.migrate import ConfigError, load_config, migrate_config, write_migration
from compat_ema.migrate.mapping import PLUGIN

BASE = ("ema_momentum = 0.0002\n"
        "ema_hook = dict(type='ExpMomentumEMAHook', resume_from=None, momentum=0.0001, "
        "priority=49)\n"
        "runner = dict(type='EpochBasedRunner', max_epochs=3)\n"
        "model = dict(type='YOLOX', backbone=dict(depth=1, width=2))\n")


@pytest.fixture
def d(tmp_path):
    (tmp_path / 'base.py').write_text(BASE)
    return tmp_path


def write(d, name, text):
    p = d / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ 5. {{_base_.xxx}}
def test_base_reference_inside_a_hook_entry(d):
    p = write(d, 'c.py', "_base_ = './base.py'\n"
                         "custom_hooks = [dict(type='EMAHook', momentum={{_base_.ema_momentum}}, "
                         "priority=49)]\n")
    assert load_config(str(p)).cfg['custom_hooks'] == [
        dict(type='EMAHook', momentum=0.0002, priority=49)]
    mig = migrate_config(str(p), 'exact')
    assert mig.mapped[0].new_entry() == dict(type='EMAHook', ema_type='LegacyMMCVEMA',
                                             momentum=0.0002, priority=49)
    assert '{{_base_.ema_momentum}}' in mig.text      # edited in place, the reference kept


def test_base_reference_as_a_whole_hook_entry(d):
    p = write(d, 'c.py', "_base_ = './base.py'\n"
                         "custom_hooks = [dict(type='NumClassCheckHook'), {{_base_.ema_hook}}]\n")
    mig = migrate_config(str(p), 'exact')
    assert not mig.unknown and len(mig.mapped) == 1
    out = d / 'c_exact.py'
    write_migration(mig, str(out))
    assert load_config(str(out)).cfg['custom_hooks'] == [
        dict(type='NumClassCheckHook'),
        dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.0001, priority=49)]


@pytest.mark.parametrize('text,message', [
    ("momentum={{_base_.ema_momentum}} * 2", r'inside an expression.*whole value'),
    ("momentum={{_base_.no_such_key}}", r"define no 'no_such_key'"),
])
def test_base_reference_that_mmcv_would_not_substitute_is_refused(d, text, message):
    p = write(d, 'c.py', "_base_ = './base.py'\n"
                         f"custom_hooks = [dict(type='EMAHook', {text}, priority=49)]\n")
    with pytest.raises((ConfigError, ValueError), match=message):
        migrate_config(str(p), 'exact')


def test_nested_base_reference(d):
    p = write(d, 'c.py', "_base_ = './base.py'\nwidth = {{_base_.model.backbone.width}}\n"
                         "custom_hooks = [dict(type='mmcv.EMAHook')]\n")
    assert load_config(str(p)).cfg['width'] == 2


# ------------------------------------------------------------------ 6. the rest of mmcv's Config
def test_predefined_variables_in_strings(d):
    p = write(d, 'my_cfg.py', "work_dir = '{{ fileDirname }}/work/{{fileBasenameNoExtension}}'\n"
                              "name = '{{ fileBasename }}|{{ fileExtname }}'\n"
                              "custom_hooks = [dict(type='mmcv.EMAHook')]\n")
    cfg = load_config(str(p)).cfg
    assert cfg['work_dir'] == f'{d.as_posix()}/work/my_cfg'
    assert cfg['name'] == 'my_cfg.py|.py'
    mig = migrate_config(str(p), 'exact')
    assert any('fileDirname' in n for n in mig.notes)


def test_dict_into_a_non_dict_needs_delete(d):
    p = write(d, 'c.py', "_base_ = './base.py'\nema_momentum = dict(value=1)\n")
    with pytest.raises(ConfigError, match=r'ema_momentum.*_delete_=True'):
        load_config(str(p))
    p = write(d, 'c2.py', "_base_ = './base.py'\nema_momentum = dict(_delete_=True, value=1)\n"
                          "model = dict(backbone=dict(width=4))\n")
    cfg = load_config(str(p)).cfg
    assert cfg['ema_momentum'] == dict(value=1)
    assert cfg['model'] == dict(type='YOLOX', backbone=dict(depth=1, width=4))


def test_merges_through_a_base_chain(d):
    write(d, 'mid.py', "_base_ = './base.py'\nmodel = dict(backbone=dict(depth=5))\n")
    p = write(d, 'c.py', "_base_ = './mid.py'\nmodel = dict(neck=dict(k=1))\n"
                         "custom_hooks = [dict(type='mmcv.EMAHook', momentum=0.001)]\n")
    cfg = load_config(str(p)).cfg
    assert cfg['model'] == dict(type='YOLOX', backbone=dict(depth=5, width=2), neck=dict(k=1))
    assert cfg['runner'] == dict(type='EpochBasedRunner', max_epochs=3)


def test_json_base_file(d):
    (d / 'hooks.json').write_text(json.dumps(
        {'custom_hooks': [{'type': 'EMAHook', 'momentum': 0.001, 'priority': 49}],
         'work_dir': '{{ fileDirname }}/w'}))
    p = write(d, 'c.py', "_base_ = ['./base.py', './hooks.json']\n")
    cfg = load_config(str(p)).cfg
    assert cfg['work_dir'] == f'{d.as_posix()}/w'
    mig = migrate_config(str(p), 'exact')
    out = d / 'c_exact.py'
    write_migration(mig, str(out))
    assert load_config(str(out)).cfg['custom_hooks'] == [
        dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.001, priority=49)]


def test_yaml_base_file(d):
    (d / 'hooks.yaml').write_text("custom_hooks:\n  - type: EMAHook\n    momentum: 0.001\n")
    p = write(d, 'c.py', "_base_ = ['./base.py', './hooks.yaml']\n")
    if importlib.util.find_spec('yaml') is None:   # compat_ema does not depend on PyYAML
        with pytest.raises(ConfigError, match='PyYAML'):
            load_config(str(p))
    else:
        assert load_config(str(p)).cfg['custom_hooks'] == [dict(type='EMAHook', momentum=0.001)]


@pytest.mark.parametrize('ext', ['.json', '.yaml'])
def test_a_data_config_as_the_input_is_refused_by_name(d, ext, capsys):
    p = write(d, 'c' + ext, '{}')
    assert cli(['migrate', str(p)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f'a {ext} config as the input' in err


def test_reserved_keys_are_refused(d):
    p = write(d, 'c.py', "filename = 'x'\ncustom_hooks = []\n")
    with pytest.raises(ConfigError, match='reserved'):
        load_config(str(p))


# ------------------------------------------------------------------ 3. custom_imports
def test_mmcv_integration_import_is_replaced_in_place(d):
    p = write(d, 'c.py', "runner = dict(type='EpochBasedRunner', max_epochs=1)\n"
                         "custom_imports = dict(imports=['my_mod', 'compat_ema.integrations.mmcv'],"
                         " allow_failed_imports=False)\n"
                         "custom_hooks = [dict(type='CompatExpMomentumEMAHook', momentum=1e-4)]\n")
    for mode in ('exact', 'native'):
        mig = migrate_config(str(p), mode)
        out = d / f'c_{mode}.py'
        write_migration(mig, str(out))
        imports = load_config(str(out)).cfg['custom_imports']['imports']
        assert imports == (['my_mod', PLUGIN] if mode == 'exact' else ['my_mod'])
        assert any('needs mmcv 1.x' in n for n in mig.notes)


# ------------------------------------------------------------------ refusals: one line, exit 1
def test_unknown_ema_hook_refusal_is_one_line(d, capsys):
    p = write(d, 'c.py', "custom_hooks = [dict(type='ModelEMAHook', decay=0.9998),\n"
                         "                dict(type='SWAHook', swa_lr=0.1)]\n")
    assert cli(['migrate', str(p)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert 'ModelEMAHook' in err and 'SWAHook' in err and '--keep-unknown' in err
    assert not (d / 'c_exact.py').exists()
