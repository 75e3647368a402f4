"""reference/MANIFEST.json matches the files under reference/ (default env, no upstream needed).

The manifest is written by ``reference/generate.py`` (oracle env). If a check here
fails after someone regenerated part of reference/, rewrite it with
``python reference/generate.py --manifest-only``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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
