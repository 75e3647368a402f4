"""Live: regenerating traces with the real runners gives the committed bytes (oracle env).

Also checks that ``reference/gen_traces.py`` never imports compat_ema.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOME = ['mmcv_epoch_trainval_normal', 'mmdet_epoch_resume_runner_p49', 'mmdet_iter_resume_runner_cpu',
        'mmengine_epoch_resume', 'mmengine_iter_ckpt2']


def _load():
    spec = importlib.util.spec_from_file_location('gen_traces_live', ROOT / 'reference' / 'gen_traces.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gen_traces_does_not_use_compat_ema():
    source = (ROOT / 'reference' / 'gen_traces.py').read_text()
    assert 'import compat_ema' not in source and 'from compat_ema' not in source


def test_regenerated_traces_are_byte_identical(tmp_path):
    gen = _load()
    paths = gen.main(tmp_path, names=SOME)
    assert [p.stem for p in paths] == [s['name'] for s in gen.SCENARIOS if s['name'] in SOME]
    for p in paths:
        assert p.read_bytes() == (ROOT / 'reference' / 'traces' / p.name).read_bytes(), p.name
