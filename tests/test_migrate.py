"""``compat-ema migrate`` and compat_ema.migrate (default env: no OpenMMLab package needed).

The fixtures under tests/fixtures/configs/ are shaped like upstream configs
(mmdet 2.28 YOLOX with ExpMomentumEMAHook, resume_from and priority 49, an
mmdet 2.x detector with LinearMomentumEMAHook, mmcls 0.x / mmseg 0.x with
mmcv's EMAHook). The real-framework check is tests/oracle/test_migrate_real.py.
"""
from __future__ import annotations

import math
import os
import shutil

import pytest

from compat_ema.cli import main as cli
from compat_ema.migrate import (ConfigError, UnknownKeysError, UnsupportedHooks, compare,
                                load_config, migrate_config, parse_source, write_migration)
from compat_ema.migrate.compare import simulate_ema, toy_trajectory
from compat_ema.core.atomic import OutputExists

FIX = os.path.join(os.path.dirname(__file__), 'fixtures', 'configs')
PLUGIN = 'compat_ema.integrations.mmengine_plugin'


@pytest.fixture
def configs(tmp_path):
    dst = tmp_path / 'configs'
    shutil.copytree(FIX, dst)
    return dst


def hooks_of(path):
    return load_config(str(path)).cfg['custom_hooks']


# -- the reader -----------------------------------------------------------------------------

def test_reader_merges_bases_like_mmcv():
    cfg = load_config(os.path.join(FIX, 'mmdet2_yolox/yolox/yolox_tiny_8x8_300e_coco.py')).cfg
    # child dict merged into the base dict
    assert cfg['model']['type'] == 'YOLOX' and cfg['model']['backbone']['widen_factor'] == 0.375
    assert cfg['model']['backbone']['type'] == 'CSPDarknet'
    # _delete_=True replaced the base lr_config instead of merging
    assert 'step' not in cfg['lr_config'] and cfg['lr_config']['policy'] == 'YOLOX'
    # variables, arithmetic, lists from the file
    assert cfg['evaluation']['dynamic_intervals'] == [(285, 1)]
    assert cfg['custom_hooks'][2] == dict(type='ExpMomentumEMAHook', resume_from=None,
                                          momentum=0.0001, priority=49)
    assert cfg['runner'] == dict(type='EpochBasedRunner', max_epochs=300)
    assert cfg['workflow'] == [('train', 1)]


def test_reader_never_executes_and_tolerates_python_it_does_not_read(tmp_path):
    marker = tmp_path / 'executed'
    src = parse_source(
        'import os\n'
        f'os.system("touch {marker}")\n'
        f'open({str(marker)!r}, "w")\n'
        'xs = [i for i in range(3)]\n'
        'def f():\n    return 1\n'
        'ok = dict(a=1, b=[2, 3], **{"c": 4})\n'
        "label = f'n{ok[\"a\"]}'\n")
    assert not marker.exists()
    assert src.values['ok'] == dict(a=1, b=[2, 3], c=4)
    assert src.values['label'] == 'n1'
    assert 'comprehension' in repr(src.values['xs']).lower() or 'ListComp' in repr(src.values['xs'])


def test_reader_errors(tmp_path):
    (tmp_path / 'a.py').write_text("x = 1\n")
    (tmp_path / 'b.py').write_text("x = 2\n")
    (tmp_path / 'c.py').write_text("_base_ = ['a.py', 'b.py']\n")
    with pytest.raises(ConfigError, match='duplicate key'):
        load_config(str(tmp_path / 'c.py'))
    (tmp_path / 'd.py').write_text("_base_ = 'nope.py'\n")
    with pytest.raises(ConfigError, match='no such config file'):
        load_config(str(tmp_path / 'd.py'))
    (tmp_path / 'e.py').write_text("_base_ = 'e.py'\n")
    with pytest.raises(ConfigError, match='cycle'):
        load_config(str(tmp_path / 'e.py'))
    (tmp_path / 'f.py').write_text("custom_hooks = [\n")
    with pytest.raises(ConfigError, match='f.py:'):
        load_config(str(tmp_path / 'f.py'))


# -- --exact ----------------------------------------------------------------------------------

def test_yolox_exact_edits_only_the_ema_entry(configs):
    src = configs / 'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py'
    original = src.read_text()
    mig = migrate_config(str(src), 'exact')
    new = mig.text
    # the entry, migrated in place; its comment and the other hooks survive
    assert "type='EMAHook',\n        ema_type='LegacyExpMomentumEMA',\n" \
           "        momentum=0.0001,  # YOLOX's value\n        priority=49)" in new
    assert 'resume_from=resume_from' not in new
    before, _, _ = original.partition("        type='ExpMomentumEMAHook'")
    assert new.startswith(before)  # everything above the entry is byte-identical
    assert original.split('checkpoint_config = dict(interval=interval)')[1] in new
    out = configs / 'mmdet2_yolox/yolox/yolox_s_exact.py'
    write_migration(mig, str(out))
    cfg = load_config(str(out)).cfg
    assert cfg['custom_hooks'] == [
        dict(type='YOLOXModeSwitchHook', num_last_epochs=15, priority=48),
        dict(type='SyncNormHook', num_last_epochs=15, interval=10, priority=48),
        dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.0001, priority=49)]
    assert cfg['custom_imports'] == dict(imports=[PLUGIN], allow_failed_imports=False)
    assert any('resume_from=None' in n for n in mig.notes)


def test_inherited_hook_is_overridden_in_the_child(configs):
    src = configs / 'mmdet2_yolox/yolox/yolox_tiny_8x8_300e_coco.py'
    mig = migrate_config(str(src), 'exact')
    assert mig.text.startswith(src.read_text())  # appended only
    out = configs / 'mmdet2_yolox/yolox/tiny_exact.py'
    write_migration(mig, str(out))
    hooks = hooks_of(out)
    assert hooks[2] == dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.0001,
                            priority=49)
    assert hooks[:2] == hooks_of(src)[:2]
    # the base file is untouched
    assert 'ExpMomentumEMAHook' in (configs / 'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py').read_text()


def test_resume_from_moves_to_the_runner(configs, capsys):
    src = configs / 'mmdet2_yolox/yolox/yolox_s_resume.py'
    out = configs / 'resumed.py'
    assert cli(['migrate', str(src), '-o', str(out), '--sim-iters', '50']) == 0
    printed = capsys.readouterr().out
    assert "load_from='work_dirs/yolox_s/epoch_100.pth'" in printed
    assert 'compat-ema convert' in printed
    cfg = load_config(str(out)).cfg
    assert cfg['load_from'] == 'work_dirs/yolox_s/epoch_100.pth' and cfg['resume'] is True
    assert all('resume_from' not in h for h in cfg['custom_hooks'])
    # -o in another directory: _base_ rewritten so the bases still resolve
    assert cfg['model']['type'] == 'YOLOX'


@pytest.mark.parametrize('rel,expected', [
    ('mmdet2_linear/retinanet_r50_fpn_linear_ema_1x_coco.py',
     dict(type='EMAHook', ema_type='LegacyLinearMomentumEMA', momentum=0.001, interval=4,
          warm_up=2000, skip_buffers=True, priority=49)),
    ('mmcls_ema/convnext-tiny_32xb128_in1k.py',
     dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=4e-5, priority='ABOVE_NORMAL')),
    ('mmseg_ema/segformer_ema_160k.py',
     dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=0.0002, interval=1, warm_up=100)),
])
def test_exact_entries(configs, rel, expected):
    src = configs / rel
    out = configs / 'out_exact.py'
    write_migration(migrate_config(str(src), 'exact', out=str(out)), str(out))
    hooks = hooks_of(out)
    assert expected in hooks
    assert not any(h.get('type') in ('LinearMomentumEMAHook',) for h in hooks)
    assert load_config(str(out)).cfg['custom_imports']['imports'] == [PLUGIN]


def test_exact_is_bitwise_on_the_toy_trajectory():
    for legacy in (dict(type='ExpMomentumEMAHook', momentum=0.0001, priority=49),
                   dict(type='mmcv.EMAHook', momentum=0.3, interval=3, warm_up=5),
                   dict(type='LinearMomentumEMAHook', momentum=0.2, interval=2, warm_up=40)):
        from compat_ema.migrate import classify, map_exact
        new = map_exact(classify(legacy)).new_entry()
        cmp = compare(legacy, new, 200)
        assert cmp.bitwise_equal and cmp.first_diff is None and cmp.max_rel_diff == 0


def test_existing_custom_imports_is_extended_in_place(tmp_path):
    p = tmp_path / 'c.py'
    p.write_text("custom_imports = dict(imports=['my.module'], allow_failed_imports=False)\n"
                 "custom_hooks = [dict(type='mmcv.EMAHook')]\n")
    mig = migrate_config(str(p), 'exact')
    assert "imports=['my.module', 'compat_ema.integrations.mmengine_plugin']" in mig.text
    assert mig.text.count('custom_imports') == 1


# -- --native -------------------------------------------------------------------------------

def test_native_mmcv_entry_and_report_numbers(configs):
    src = configs / 'mmcls_ema/convnext-tiny_32xb128_in1k.py'
    mig = migrate_config(str(src), 'native', iters=500)
    (mapped,) = mig.mapped
    new = mapped.new_entry()
    assert new == dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=4e-5,
                       priority='ABOVE_NORMAL')
    cmp = compare(dict(type='mmcv.EMAHook', momentum=4e-5), new, 500)
    # float64 expectations: legacy min(4e-5, (1+t)/(100+t)) = 4e-5 everywhere; mmengine copies
    # at t = 0, then 4e-5. First difference at 0, max relative difference |4e-5 - 1| / 1.
    assert cmp.first_diff == 0
    assert cmp.max_rel_diff == pytest.approx(1 - 4e-5, abs=1e-15)
    # toy gap: legacy EMA = init + sum of tiny steps, mmengine EMA = copy of the first iterate
    traj = toy_trajectory(500).double()
    ema_l, ema_n = traj[0].clone(), traj[1].clone()
    for t in range(500):
        ema_l = (1 - 4e-5) * ema_l + 4e-5 * traj[t + 1]
        if t:
            ema_n = ema_n + 4e-5 * (traj[t + 1] - ema_n)
    assert cmp.final_gap == pytest.approx(float((ema_l - ema_n).abs().max()), rel=1e-4)


def test_native_linear_keeps_the_power_and_gating(configs):
    src = configs / 'mmdet2_linear/retinanet_r50_fpn_linear_ema_1x_coco.py'
    mig = migrate_config(str(src), 'native', iters=100)
    new = mig.mapped[0].new_entry()
    assert new['ema_type'] == 'ExponentialMovingAverage'
    assert new['momentum'] == 0.001 ** 4 and new['interval'] == 4 and new['begin_iter'] == 4
    assert new['update_buffers'] is False and 'skip_buffers' not in new and 'warm_up' not in new
    legacy = dict(type='LinearMomentumEMAHook', momentum=0.001, interval=4, warm_up=2000,
                  skip_buffers=True)
    cmp = compare(legacy, new, 100)
    legacy_updates = [t for t in range(100) if (t + 1) % 4 == 0]
    assert [s.iter for s in cmp.other if s.action in ('update', 'copy')] == legacy_updates
    # iterations 0-2: legacy skips, mmengine holds (EMA := source) before begin_iter; 3: legacy
    # blends 1e-12, mmengine copies; afterwards the same update iterations and momentum
    assert cmp.first_diff == 0
    assert [s.action for s in cmp.other[:4]] == ['hold', 'hold', 'hold', 'copy']
    for a, b in zip(cmp.legacy[4:], cmp.other[4:]):
        assert (a.action, a.momentum) == (b.action, b.momentum)
        assert a.momentum in (0.0, min(0.001 ** 4, (1 + a.iter) / (2000 + a.iter)))
    assert 'ema_momentum' in src.read_text() and '1.0000000000000002e-12' in mig.text


def test_native_exp_choice_depends_on_run_length(configs):
    src = configs / 'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py'
    short = migrate_config(str(src), 'native', iters=3000).mapped[0].new_entry()
    assert short['ema_type'] == 'MomentumAnnealingEMA'
    assert short['gamma'] == round(2000 * math.log(2)) and short['update_buffers'] is True
    long = migrate_config(str(src), 'native', iters=60000).mapped[0].new_entry()
    assert long['ema_type'] == 'ExponentialMovingAverage' and 'gamma' not in long


# -- refusals -------------------------------------------------------------------------------

def test_unknown_key_is_an_error_naming_it(configs, capsys):
    with pytest.raises(UnknownKeysError, match=r"\['decay'\]"):
        migrate_config(str(configs / 'broken/unknown_key.py'))
    assert cli(['migrate', str(configs / 'broken/unknown_key.py')]) == 1
    assert "['decay']" in capsys.readouterr().err
    assert not (configs / 'broken/unknown_key_exact.py').exists()


def test_unknown_ema_hook_is_reported_not_dropped(configs, capsys):
    src = configs / 'broken/unknown_ema.py'
    with pytest.raises(UnsupportedHooks, match='ModelEMAHook'):
        migrate_config(str(src))
    assert cli(['migrate', str(src)]) == 1
    assert 'ModelEMAHook' in capsys.readouterr().err
    assert cli(['migrate', str(src), '--keep-unknown']) == 0
    out = capsys.readouterr().out
    assert 'not understood' in out and 'ModelEMAHook' in out and 'nothing written' in out


def test_unknown_ema_next_to_a_known_one_is_kept(tmp_path, capsys):
    p = tmp_path / 'c.py'
    p.write_text("custom_hooks = [dict(type='SWAHook', swa_lr=0.1),\n"
                 "                dict(type='mmcv.EMAHook', momentum=0.001)]\n")
    assert cli(['migrate', str(p), '--keep-unknown', '--sim-iters', '20']) == 0
    hooks = hooks_of(tmp_path / 'c_exact.py')
    assert hooks[0] == dict(type='SWAHook', swa_lr=0.1)
    assert hooks[1]['ema_type'] == 'LegacyMMCVEMA'


def test_refuses_to_overwrite(configs, capsys):
    src = configs / 'mmcls_ema/convnext-tiny_32xb128_in1k.py'
    original = src.read_text()
    assert cli(['migrate', str(src), '-o', str(src), '--force']) == 1
    assert 'input' in capsys.readouterr().err and src.read_text() == original
    out = configs / 'x.py'
    out.write_text('keep me\n')
    assert cli(['migrate', str(src), '-o', str(out), '--sim-iters', '10']) == 1
    assert out.read_text() == 'keep me\n'
    assert cli(['migrate', str(src), '-o', str(out), '--force', '--sim-iters', '10']) == 0
    assert 'LegacyMMCVEMA' in out.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600
    leftovers = [f for f in os.listdir(configs) if f.endswith('.tmp')]
    assert leftovers == []
    with pytest.raises(OutputExists):
        write_migration(migrate_config(str(src), out=str(out)), str(out))
    with pytest.raises(ValueError, match='computed for'):
        write_migration(migrate_config(str(src)), str(configs / 'elsewhere' / 'y.py'))


def test_nothing_to_migrate(tmp_path, capsys):
    p = tmp_path / 'c.py'
    p.write_text("custom_hooks = [dict(type='EMAHook', ema_type='MomentumAnnealingEMA')]\n"
                 "train_cfg = dict(max_epochs=2)\n")
    assert cli(['migrate', str(p)]) == 0
    out = capsys.readouterr().out
    assert 'already an mmengine EMAHook' in out and 'nothing written' in out
    assert not (tmp_path / 'c_exact.py').exists()


def test_simulation_uses_compat_classes_against_float64():
    """The toy legacy EMA equals a float64 recursion to float32 accuracy."""
    traj = toy_trajectory(300)
    ema = simulate_ema(dict(type='ExpMomentumEMAHook', momentum=0.01, total_iter=50), 300)
    ref = traj[0].double()
    for t in range(300):
        m = (1 - 0.01) * math.exp(-(1 + t) / 50) + 0.01
        ref = (1 - m) * ref + m * traj[t + 1].double()
        assert float((ema[t].double() - ref).abs().max()) < 1e-5


def test_compat_integration_names_are_understood(tmp_path):
    """Configs that already use compat_ema's hooks in the real mmcv runners migrate too."""
    from compat_ema.migrate import classify
    p = tmp_path / 'c.py'
    p.write_text("runner = dict(type='EpochBasedRunner', max_epochs=1)\n"
                 "custom_hooks = [dict(type='CompatExpMomentumEMAHook', momentum=1e-4, "
                 "priority=49)]\n")
    mig = migrate_config(str(p), 'exact')
    assert mig.mapped[0].new_entry() == dict(type='EMAHook', ema_type='LegacyExpMomentumEMA',
                                             momentum=1e-4, priority=49)
    assert classify(dict(type='CompatEMAHook', warm_up=3)).kind == 'mmcv.EMAHook'
    spec = classify(dict(type='CompatEMAHook', ema_type='CompatMomentumAnnealingEMA', gamma=5))
    assert (spec.kind, spec.ema_type) == ('mmengine.EMAHook', 'MomentumAnnealingEMA')
    assert classify(dict(type='EMAHook', ema_type='CompatMMDet3ExpMomentumEMA')).ema_type == \
        'ExpMomentumEMA'
    ema = simulate_ema(dict(type='CompatEMAHook', ema_type='CompatMomentumAnnealingEMA',
                            gamma=5, momentum=0.01), 5)
    traj = toy_trajectory(5).double()
    ref = traj[1].clone()  # copy at steps 0, then max(m, 5 / (5 + steps))
    for s in range(1, 5):
        m = max(0.01, 5 / (5 + s))
        ref = ref + m * (traj[s + 1] - ref)
    assert float((ema[-1].double() - ref).abs().max()) < 1e-6


def test_merge_delete_and_nested(tmp_path):
    (tmp_path / 'base.py').write_text(
        "opt = dict(type='SGD', lr=0.1, extra=dict(a=1, b=2))\nlr = dict(policy='step', step=[8])\n")
    (tmp_path / 'child.py').write_text(
        "_base_ = './base.py'\nopt = dict(lr=0.2, extra=dict(b=3, _delete_=False))\n"
        "lr = dict(_delete_=True, policy='YOLOX')\nx = opt['lr'] if False else 1\n")
    cfg = load_config(str(tmp_path / 'child.py')).cfg
    assert cfg['opt'] == dict(type='SGD', lr=0.2, extra=dict(a=1, b=3))
    assert cfg['lr'] == dict(policy='YOLOX')


def test_bad_values_are_clear_errors(tmp_path, capsys):
    p = tmp_path / 'c.py'
    p.write_text("custom_hooks = [dict(type='mmcv.EMAHook', momentum=0.5, interval=2000)]\n")
    assert cli(['migrate', str(p), '--native']) == 1
    assert 'momentum**interval' in capsys.readouterr().err
    assert cli(['migrate', str(p), '--sim-iters', '0']) == 2


def test_legacy_swap_writes_legacy_emahook(configs):
    from compat_ema.migrate import classify, map_exact
    src = configs / 'mmdet2_yolox/yolox/yolox_s_8x8_300e_coco.py'
    mig = migrate_config(str(src), 'exact', legacy_swap=True)
    assert "type='LegacyEMAHook',\n        ema_type='LegacyExpMomentumEMA'," in mig.text
    legacy = dict(type='ExpMomentumEMAHook', momentum=0.01, interval=2, total_iter=30)
    new = map_exact(classify(legacy), legacy_swap=True).new_entry()
    assert new['type'] == 'LegacyEMAHook'
    assert compare(legacy, new, 60).bitwise_equal
    with pytest.raises(ValueError, match='--exact'):
        migrate_config(str(src), 'native', legacy_swap=True)


def test_unreadable_values_elsewhere_do_not_block_the_migration(tmp_path):
    p = tmp_path / 'c.py'
    p.write_text("import numpy as np\n"
                 "custom_hooks = [\n"
                 "    dict(type='SyncNormHook', epochs=[i for i in range(3)]),\n"
                 "    dict(type='ExpMomentumEMAHook', momentum=0.0001, priority=49),\n"
                 "]\n")
    mig = migrate_config(str(p), 'exact')
    assert "dict(type='SyncNormHook', epochs=[i for i in range(3)])" in mig.text
    assert "dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.0001" in mig.text
    q = tmp_path / 'd.py'
    q.write_text("import numpy as np\n"
                 "custom_hooks = [dict(type='ExpMomentumEMAHook', momentum=np.float64(1e-4))]\n")
    with pytest.raises(UnknownKeysError, match=r"cannot read momentum \(.*d.py:2"):
        migrate_config(str(q), 'exact')


def test_keyword_positions_without_ast_keyword_lineno():
    """Python 3.8's ast.keyword has no position: the editor finds 'arg =' itself."""
    import ast
    from compat_ema.migrate.rewrite import apply_edits, entry_edits
    text = ("hooks = [dict(\n    type='mmcv.EMAHook',  # c\n    momentum = 0.1,\n"
            "    resume_from=None)]\n")
    results = []
    for strip in (False, True):
        src = parse_source(text, 'x.py')
        node = src.tree.body[0].value.elts[0]
        if strip:
            for kw in node.keywords:
                if hasattr(kw, 'lineno'):   # Python 3.8 has none to delete
                    del kw.lineno
        edits = entry_edits(src, node, 'EMAHook', dict(ema_type='LegacyMMCVEMA'),
                            ['resume_from'], {}, {})
        results.append(apply_edits(text.encode(), edits).decode())
    assert results[0] == results[1] == (
        "hooks = [dict(\n    type='EMAHook',\n    ema_type='LegacyMMCVEMA',  # c\n"
        "    momentum = 0.1)]\n")


def test_non_ascii_text_and_crlf_line_endings(tmp_path):
    """ast columns count UTF-8 bytes; CRLF files stay CRLF."""
    p = tmp_path / 'c.py'
    text = ("# 配置文件：YOLOX 的 EMA\r\n"
            "custom_hooks = [\r\n"
            "    dict(type='SyncNormHook', note='同步'),  # 同步 BN\r\n"
            "    dict(\r\n"
            "        type='ExpMomentumEMAHook',  # 指数\r\n"
            "        momentum=0.0001,\r\n"
            "        priority=49)\r\n"
            "]\r\n")
    p.write_bytes(text.encode('utf-8'))
    mig = migrate_config(str(p), 'exact')
    assert mig.text == (
        "# 配置文件：YOLOX 的 EMA\r\n"
        "custom_hooks = [\r\n"
        "    dict(type='SyncNormHook', note='同步'),  # 同步 BN\r\n"
        "    dict(\r\n"
        "        type='EMAHook',\r\n"
        "        ema_type='LegacyExpMomentumEMA',  # 指数\r\n"
        "        momentum=0.0001,\r\n"
        "        priority=49)\r\n"
        "]\r\n"
        "\r\n# ---- added by compat-ema migrate --exact ----\r\n"
        "custom_imports = dict(imports=['compat_ema.integrations.mmengine_plugin'], "
        "allow_failed_imports=False)\r\n")


def test_diff_and_dry_run_write_nothing(configs, capsys):
    src = configs / 'mmcls_ema/convnext-tiny_32xb128_in1k.py'
    assert cli(['migrate', str(src), '--diff', '--sim-iters', '10']) == 0
    out = capsys.readouterr().out
    assert "-custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]" in out
    assert ("+custom_hooks = [dict(type='EMAHook', ema_type='LegacyMMCVEMA', momentum=4e-5, "
            "priority='ABOVE_NORMAL')]") in out
    assert 'only the EMA hooks were migrated' in out and 'optimizer_config' in out
    assert cli(['migrate', str(src), '--dry-run', '--sim-iters', '10']) == 0
    assert 'custom_imports = dict(' in capsys.readouterr().out
    assert not (configs / 'mmcls_ema/convnext-tiny_32xb128_in1k_exact.py').exists()


def test_base_ema_hook_when_a_config_registered_it(tmp_path):
    from compat_ema.migrate import classify, map_exact, map_native
    legacy = dict(type='BaseEMAHook', momentum=0.01, interval=2, skip_buffers=True)
    assert map_exact(classify(legacy)).new_entry() == dict(
        type='EMAHook', ema_type='LegacyMMDetEMA', momentum=0.01, interval=2, skip_buffers=True)
    native = map_native(classify(legacy)).new_entry()
    assert native == dict(type='EMAHook', ema_type='ExponentialMovingAverage', begin_iter=2,
                          momentum=0.01, interval=2, update_buffers=False)
    assert compare(legacy, map_exact(classify(legacy)).new_entry(), 40).bitwise_equal
    steps = compare(legacy, native, 40).legacy
    assert [(s.iter, s.momentum) for s in steps if s.action == 'update'][:2] == [(1, 0.01),
                                                                                 (3, 0.01)]
