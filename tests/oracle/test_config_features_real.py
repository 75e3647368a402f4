"""compat_ema's config reader against the REAL mmcv 1.6 ``Config.fromfile`` (issue 16, items 5
and 6): what the reader computes without executing a file equals what mmcv computes by
executing it, for ``{{_base_.x}}`` references, predefined variables, .json/.yaml bases and
``_base_`` chains; where the reader refuses, mmcv raises too or computes a placeholder string.
"""
from __future__ import annotations

import json

import pytest

import upstream
from compat_ema.migrate import ConfigError, load_config

BASE = ("ema_momentum = 0.0002\n"
        "ema_hook = dict(type='ExpMomentumEMAHook', resume_from=None, momentum=0.0001, "
        "priority=49)\n"
        "runner = dict(type='EpochBasedRunner', max_epochs=3)\n"
        "model = dict(type='YOLOX', backbone=dict(depth=1, width=2))\n")

CASES = {
    'ref_in_entry': "_base_ = './base.py'\ncustom_hooks = [dict(type='EMAHook', "
                    "momentum={{_base_.ema_momentum}}, priority=49)]\n",
    'ref_whole_entry': "_base_ = './base.py'\ncustom_hooks = [dict(type='NumClassCheckHook'), "
                       "{{_base_.ema_hook}}]\n",
    'ref_nested': "_base_ = './base.py'\nwidth = {{ _base_.model.backbone.width }}\n",
    'predefined': "work_dir = '{{ fileDirname }}/work/{{fileBasenameNoExtension}}'\n"
                  "name = '{{ fileBasename }}|{{ fileExtname }}'\n",
    'delete': "_base_ = './base.py'\nema_momentum = dict(_delete_=True, value=1)\n"
              "model = dict(backbone=dict(width=4))\n",
    'chain': "_base_ = './mid.py'\nmodel = dict(neck=dict(k=1))\n",
    'json_yaml': "_base_ = ['./base.py', './hooks.json', './more.yaml']\n",
}


def _files(d):
    (d / 'base.py').write_text(BASE)
    (d / 'mid.py').write_text("_base_ = './base.py'\nmodel = dict(backbone=dict(depth=5))\n")
    (d / 'hooks.json').write_text(json.dumps(
        {'custom_hooks': [{'type': 'EMAHook', 'momentum': 0.001}], 'w': '{{ fileDirname }}/w'}))
    (d / 'more.yaml').write_text("extra:\n  a: 1\n  b: [1, 2]\n")


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x) if isinstance(x, list) else tuple(_plain(v) for v in x)
    return x


@pytest.mark.parametrize('case', sorted(CASES))
def test_reader_equals_mmcv_config(tmp_path, case):
    upstream.mmcv_hooks()
    from mmcv import Config
    _files(tmp_path)
    p = tmp_path / f'{case}.py'
    p.write_text(CASES[case])
    real = _plain(Config.fromfile(str(p))._cfg_dict.to_dict())
    ours = load_config(str(p)).cfg
    assert _plain(ours) == real


def test_refusals_match_mmcv(tmp_path):
    upstream.mmcv_hooks()
    from mmcv import Config
    _files(tmp_path)
    p = tmp_path / 'c.py'
    p.write_text("_base_ = './base.py'\nema_momentum = dict(value=1)\n")
    with pytest.raises(TypeError):
        Config.fromfile(str(p))
    with pytest.raises(ConfigError, match='_delete_=True'):
        load_config(str(p))
    p.write_text("filename = 'x'\n")
    with pytest.raises(KeyError):
        Config.fromfile(str(p))
    with pytest.raises(ConfigError, match='reserved'):
        load_config(str(p))
    # inside an expression mmcv computes with its placeholder string: a silently wrong value
    p.write_text("_base_ = './base.py'\nx = {{_base_.ema_momentum}} * 2\n")
    got = Config.fromfile(str(p)).x
    assert isinstance(got, str) and got.startswith('_ema_momentum_')
    src = load_config(str(p)).cfg['x']
    assert type(src).__name__ == 'Unevaluated' and 'whole value' in src.reason
