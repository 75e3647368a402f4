"""reference/MANIFEST.json matches the files under reference/ (default env, no upstream needed).

The manifest is written by ``reference/generate.py`` (oracle env). If a check here
fails after someone regenerated part of reference/, rewrite it with
``python reference/generate.py --manifest-only``.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

REF = Path(__file__).resolve().parents[1] / 'reference'
HINT = 'rewrite it with: python reference/generate.py --manifest-only'


@pytest.fixture(scope='module')
def manifest():
    path = REF / 'MANIFEST.json'
    assert path.is_file(), f'reference/MANIFEST.json is missing; {HINT}'
    return json.loads(path.read_text(encoding='utf-8'))


def test_manifest_names_the_recording(manifest):
    assert manifest['upstream']['mmcv'] == '1.6.0'
    assert manifest['upstream']['mmdet'] == '2.28.2'
    assert manifest['upstream']['mmengine'] == '0.10.7'
    assert manifest['torch'] == manifest['upstream']['torch'] == '2.13.0+cpu'
    assert manifest['generator_command'] == '.tox/oracle/bin/python reference/generate.py'
    assert manifest['python'] and manifest['device'].startswith('cpu')
    assert manifest['generators']['gen_trajectories']['status'] in ('ran', 'on disk')
    assert any('timestamps' in n for n in manifest['notes'])


def test_every_listed_file_has_its_recorded_bytes(manifest):
    bad = []
    for rel, entry in manifest['files'].items():
        path = REF / rel
        if not path.is_file():
            bad.append(f'{rel}: missing')
        elif path.stat().st_size != entry['size'] or \
                hashlib.sha256(path.read_bytes()).hexdigest() != entry['sha256']:
            bad.append(f'{rel}: sha256/size differ from the manifest')
    assert not bad, '\n'.join(bad[:20]) + f'\n{HINT}'


def test_every_generated_file_is_listed(manifest):
    on_disk = {p.relative_to(REF).as_posix() for sub in REF.iterdir()
               if sub.is_dir() and sub.name != '__pycache__'
               for p in sub.rglob('*') if p.is_file() and not p.name.startswith('.')
               and '__pycache__' not in p.parts}
    unlisted = sorted(on_disk - set(manifest['files']))
    assert not unlisted, f'not in MANIFEST.json: {unlisted[:20]}; {HINT}'


def test_stability_flags(manifest):
    for rel, entry in manifest['files'].items():
        top = rel.split('/')[0]
        assert entry['byte_stable'] == (top not in ('checkpoints', 'torch18')), rel


def test_reference_stays_under_5_mb():
    total = sum(p.stat().st_size for p in REF.rglob('*') if p.is_file()
                and '__pycache__' not in p.parts)
    assert total < 5 * 1024 * 1024, f'reference/ is {total} bytes'


def test_manifest_records_the_last_real_regeneration(manifest):
    env = manifest['environment']
    for field in ('torch', 'cpu_model', 'cpu_capability', 'kernel_class', 'blas', 'threads'):
        assert field in env, field
    last = manifest['last_regeneration']
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', last['when'])
    assert last['environment']['threads'] == 1  # generate.py pins it
    assert set(last['generators']) <= {'gen_trajectories', 'gen_traces', 'gen_checkpoints',
                                       'gen_native'} and last['generators']


def _generate_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('reference_generate_t', str(REF / 'generate.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENV_A = {'torch': '2.13.0+cpu', 'machine': 'x86_64', 'cpu_model': 'AMD EPYC',
         'cpu_capability': 'AVX2', 'blas': {'name': 'mkl', 'isa': 'AVX2'}, 'threads': 1}
ENV_B = dict(ENV_A, cpu_model='Intel Xeon', cpu_capability='AVX512',
             blas={'name': 'mkl', 'isa': 'AVX512'})


def _golden(path, data, env, classes=('cpu-x86_64-AVX2',)):
    from compat_ema.testing import golden
    golden.save_golden(path, {'w': torch.tensor(data)},
                       meta={'case': 'c', 'environment': env, 'kernel_classes': list(classes)})
    return path


def test_check_tells_environment_fields_from_data(tmp_path):
    gen = _generate_module()
    a = _golden(tmp_path / 'a.pt', [1.0, 2.0], ENV_A)
    same = _golden(tmp_path / 'same.pt', [1.0, 2.0], ENV_A)
    env_only = _golden(tmp_path / 'b.pt', [1.0, 2.0], ENV_B)
    differs = _golden(tmp_path / 'c.pt', [1.0, 2.0000002], ENV_A)
    assert gen.classify('trajectories/x.pt', a, same, ENV_A, ENV_A)[0] == 'identical'
    assert gen.classify('trajectories/x.pt', a, env_only, ENV_A, ENV_B)[0] == 'environment-only'
    assert gen.classify('trajectories/x.pt', a, differs, ENV_A, ENV_A)[0] == 'DIFFERS'
    # EMA arithmetic on replayed inputs is not training: another machine does not excuse it
    assert gen.classify('trajectories/x.pt', a, differs, ENV_A, ENV_B)[0] == 'DIFFERS'


def _trace(path, rows, env):
    phase = {'hooks': [], 'error': None, 'latest': None, 'checkpoints': {},
             'final': {'w': rows[-1][6], 'ema_w': rows[-1][7]}, 'trace': rows}
    path.write_text(json.dumps({'name': 't', 'environment': env, 'spec': {'name': 't'},
                                'phases': {'full': phase}}))
    return path


def _row(method, w, ema_w):
    return ['lo', method, 'train', 0, 0, 0, w, ema_w, 0, 0, '0x0p+0', None, None]


def test_check_accepts_other_training_floats_only_with_the_same_pattern(tmp_path):
    gen = _generate_module()
    old = _trace(tmp_path / 'old.json', [_row('after_train_iter', '0x1.8p-1', '0x1p-1'),
                                         _row('after_train_epoch', '0x1p-1', '0x1.8p-1')], ENV_A)
    other_cpu = _trace(tmp_path / 'new.json', [_row('after_train_iter', '0x1.8p-1', '0x1.1p-1'),
                                               _row('after_train_epoch', '0x1.1p-1', '0x1.8p-1')],
                       ENV_B)
    no_swap = _trace(tmp_path / 'bad.json', [_row('after_train_iter', '0x1.8p-1', '0x1.1p-1'),
                                             _row('after_train_epoch', '0x1.8p-1', '0x1.1p-1')],
                     ENV_B)
    assert gen.classify('traces/t.json', old, other_cpu, ENV_A, ENV_B)[0] == 'environment-only'
    assert gen.classify('traces/t.json', old, other_cpu, ENV_A, ENV_A)[0] == 'DIFFERS'
    assert gen.classify('traces/t.json', old, no_swap, ENV_A, ENV_B) == (
        'DIFFERS', 'identity pattern of the training floats')
