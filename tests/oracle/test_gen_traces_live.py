"""Live: regenerating traces with the real runners gives the committed ones (oracle env):
byte-identical on a machine with the recording's training key (CPU model, BLAS/ISA, threads),
elsewhere identical up to the environment (``reference/generate.py``'s ``classify``: header,
training floats with the same identity pattern, counters and keys).

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


def _generate():
    spec = importlib.util.spec_from_file_location('generate_live', ROOT / 'reference' / 'generate.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerated_traces_match_up_to_the_environment(tmp_path):
    import json
    gen, generate = _load(), _generate()
    paths = gen.main(tmp_path, names=SOME)
    assert [p.stem for p in paths] == [s['name'] for s in gen.SCENARIOS if s['name'] in SOME]
    for p in paths:
        old = ROOT / 'reference' / 'traces' / p.name
        old_env = json.loads(old.read_text())['environment']
        new_env = json.loads(p.read_text())['environment']
        status, why = generate.classify(f'traces/{p.name}', old, p, old_env, new_env)
        if generate._training_key(old_env) == generate._training_key(new_env):
            assert status == 'identical', (p.name, why)
        else:
            assert status in ('identical', 'environment-only'), (p.name, why)
