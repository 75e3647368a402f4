"""Regenerate everything under reference/ from the REAL upstream, then write MANIFEST.json.

One command, in the oracle env (the real mmcv 1.6.0, mmdet 2.28.2, mmengine 0.10.7)::

    .tox/oracle/bin/python reference/generate.py            # regenerate + manifest
    .tox/oracle/bin/python reference/generate.py --check    # regenerate into a temp dir and
                                                              # compare with MANIFEST.json
    python reference/generate.py --manifest-only              # re-hash the files on disk only

It runs, in order, each generator present beside it: ``gen_trajectories.py`` (EMA
trajectories), ``gen_traces.py`` (hook-call traces of the real runners),
``gen_checkpoints.py`` (real checkpoint files), ``gen_native.py`` (mmdet 3.x / mmyolo
trajectories), ``gen_gan.py`` (mmedit 0.x / mmagic 1.x hook trajectories). Each exposes ``main(out_dir: pathlib.Path) -> list[pathlib.Path]``
returning the files it wrote, and writes them in ``out_dir``, which is
``reference/<subdir>`` (:data:`SUBDIRS`: trajectories, traces, checkpoints,
native); a missing generator is skipped with a message. No generator
may import compat_ema: the references must come from the real upstream only, and
this script stops with an error if one did.

``MANIFEST.json`` records the upstream and torch versions, python, the device, the
command, and the sha256 and size of every file. Files of ``gen_checkpoints`` carry
the runners' timestamps (mmcv meta ``time``, mmengine meta ``time``), so their
bytes differ between recordings; everything else is byte-identical on regeneration
(``--check`` verifies it).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENERATORS = ('gen_trajectories', 'gen_traces', 'gen_checkpoints', 'gen_native', 'gen_gan')
#: each generator's out_dir, under reference/: it writes its files directly in there
SUBDIRS = {'gen_trajectories': 'trajectories', 'gen_traces': 'traces',
           'gen_checkpoints': 'checkpoints', 'gen_native': 'native', 'gen_gan': 'gan'}
NOT_BYTE_STABLE = {
    'gen_checkpoints': 'checkpoint files record run-specific values: the timestamps (mmcv meta '
                       '"time", mmengine meta "time" and the timestamped "experiment_name"), '
                       'the temporary work dir (mmcv meta "hook_msgs.last_ckpt", mmengine '
                       '"runtime_info.last_ckpt"), mmengine meta '
                       '"mmengine_version" (mmengine appends the git commit of the working '
                       'directory) and the wall-clock "train/time" and "train/data_time" of '
                       'mmengine\'s message hub; so their bytes differ between recordings. '
                       'Everything else, every tensor included, is identical (--check verifies it)',
}
NOT_BYTE_STABLE['external:torch18'] = (
    'torch 1.8.1 names the storage records of a zip checkpoint after memory addresses '
    '(archive/data/<address>), so re-recording reference/torch18/ gives other bytes with '
    'identical content (reference/torch18/RECORDED.json)')
#: where two recordings of a checkpoint may differ (fnmatch patterns over '/'-joined paths)
VOLATILE = ('/meta/time', '/meta/hook_msgs/last_ckpt', '/meta/experiment_name',
            '/meta/mmengine_version', '/message_hub/runtime_info/experiment_name',
            '/message_hub/runtime_info/mmengine_version', '/message_hub/runtime_info/last_ckpt',
            '/message_hub/log_scalars/train/time*', '/message_hub/log_scalars/train/data_time*')
COMMAND = '.tox/oracle/bin/python reference/generate.py'
MANIFEST = 'MANIFEST.json'


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _compat_modules() -> List[str]:
    return sorted(m for m in sys.modules if m == 'compat_ema' or m.startswith('compat_ema.'))


def _load(name: str):
    path = HERE / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'reference_{name}', str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def versions() -> Dict[str, str]:
    """Versions of the real upstream and torch in this interpreter."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for dist in ('mmcv', 'mmdet', 'mmengine', 'torch'):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = 'not installed'
    return out


def run_generators(out_dir: Path, only: Optional[List[str]] = None) -> Dict[str, dict]:
    """Run each present generator into ``out_dir``; return ``{name: {status, files}}``."""
    results: Dict[str, dict] = {}
    for name in GENERATORS:
        if only and name not in only:
            continue
        if not (HERE / f'{name}.py').is_file():
            print(f'generate: reference/{name}.py not present, skipped')
            results[name] = {'status': 'missing', 'files': []}
            continue
        print(f'generate: running reference/{name}.py ...', flush=True)
        module = _load(name)
        if not hasattr(module, 'main'):
            raise SystemExit(f'generate: reference/{name}.py has no main(out_dir) function')
        written = module.main(out_dir / SUBDIRS[name])
        leaked = _compat_modules()
        if leaked:
            raise SystemExit(f'generate: reference/{name}.py imported compat_ema ({leaked[:3]}); '
                             'references must come from the real upstream only')
        files = []
        for p in written or []:
            p = Path(p).resolve()
            if not p.is_file():
                raise SystemExit(f'generate: {name} reported {p}, which is not a file')
            try:
                files.append(p.relative_to(out_dir.resolve()).as_posix())
            except ValueError:
                raise SystemExit(f'generate: {name} wrote {p}, outside {out_dir}') from None
        results[name] = {'status': 'ran', 'files': sorted(set(files))}
        print(f'generate: {name} wrote {len(files)} file(s)')
    return results


def build_manifest(out_dir: Path, results: Dict[str, dict]) -> dict:
    """The manifest dict for the files the generators reported."""
    import torch
    files = {}
    for name, res in results.items():
        for rel in res['files']:
            entry = {'sha256': sha256(out_dir / rel), 'size': (out_dir / rel).stat().st_size,
                     'generator': name, 'byte_stable': name not in NOT_BYTE_STABLE}
            files[rel] = entry
    return {
        'generator_command': COMMAND,
        'upstream': versions(),
        'torch': torch.__version__,
        'python': platform.python_version(),
        'device': f'cpu ({platform.machine()}); torch.cuda.is_available()='
                  f'{torch.cuda.is_available()}, recorded on cpu',
        'generators': {n: {'status': r['status'], 'n_files': len(r['files']),
                           **({'note': NOT_BYTE_STABLE[n]} if n in NOT_BYTE_STABLE else {})}
                       for n, r in results.items()},
        'notes': ['Entries with "byte_stable": true are byte-identical on regeneration '
                  '(python reference/generate.py --check verifies it).',
                  'Entries with "byte_stable": false: ' + '; '.join(NOT_BYTE_STABLE.values())],
        'total_size': sum(e['size'] for e in files.values()),
        'files': dict(sorted(files.items())),
    }


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + '\n', encoding='utf-8')
    tmp.replace(path)


def _files_under(out_dir: Path, sub: Path) -> List[str]:
    return sorted(p.relative_to(out_dir).as_posix() for p in sub.rglob('*')
                  if p.is_file() and not p.name.startswith('.')
                  and '__pycache__' not in p.parts) if sub.is_dir() else []


def scan(out_dir: Path) -> Dict[str, dict]:
    """The files now under each generator's subdirectory, as ``run_generators`` reports them."""
    results: Dict[str, dict] = {}
    for name in GENERATORS:
        present = (HERE / f'{name}.py').is_file()
        results[name] = {'status': 'on disk' if present else 'missing',
                         'files': _files_under(out_dir, out_dir / SUBDIRS[name])}
    return results


def scan_external(out_dir: Path) -> Dict[str, dict]:
    """Data directories under reference/ that no generator here writes (recorded in another
    environment, e.g. ``torch113/`` on torch 1.13.1; each should say how in its RECORDED.json)."""
    out = {}
    for sub in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        if sub.name in SUBDIRS.values() or sub.name == '__pycache__' or sub.name.startswith('.'):
            continue
        files = _files_under(out_dir, sub)
        if files:
            how = f'reference/{sub.name}/RECORDED.json'
            out[f'external:{sub.name}'] = {
                'status': 'recorded elsewhere, see ' + how if (sub / 'RECORDED.json').is_file()
                else 'recorded elsewhere', 'files': files}
    return out


def _diff_paths(a, b, path=''):
    """Paths where two loaded checkpoints differ (tensors bitwise, other values by ==)."""
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [path + '{keys}']
        return [p for k in a for p in _diff_paths(a[k], b[k], f'{path}/{k}')]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [path + '[len]']
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in _diff_paths(x, y, f'{path}[{i}]')]
    if type(a) is type(b) and hasattr(a, '__dict__') and not isinstance(a, type):
        return _diff_paths(vars(a), vars(b), f'{path}.{type(a).__name__}')
    if type(a).__module__ == 'numpy' or type(b).__module__ == 'numpy':
        import numpy as np
        return [] if np.array_equal(np.asarray(a), np.asarray(b)) else [path]
    try:
        return [] if a == b else [path]
    except Exception:  # noqa: BLE001 - values without a usable ==
        return [path]


def non_volatile_differences(old: Path, new: Path) -> List[str]:
    """Where two recordings of a checkpoint differ outside :data:`VOLATILE`.

    Loads the real upstream's own files with ``weights_only=False`` (mmengine's message
    hub pickles ``HistoryBuffer`` objects), which only this oracle-env tool does.
    """
    import fnmatch
    import torch
    a = torch.load(str(old), map_location='cpu', weights_only=False)
    b = torch.load(str(new), map_location='cpu', weights_only=False)
    return [p for p in _diff_paths(a, b)
            if not any(fnmatch.fnmatchcase(p.split('.HistoryBuffer')[0], pat) for pat in VOLATILE)]


def check(only: Optional[List[str]] = None) -> int:
    """Regenerate into a temp dir; compare with MANIFEST.json. 0 when byte-stable files match."""
    manifest = json.loads((HERE / MANIFEST).read_text(encoding='utf-8'))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        results = run_generators(Path(tmp), only)
        fresh = build_manifest(Path(tmp), results)['files']
        for rel, entry in manifest['files'].items():
            if (only and entry['generator'] not in only) or entry['generator'].startswith(
                    'external:'):
                continue
            new = fresh.get(rel)
            if new is None:
                print(f'check: {rel} was not regenerated')
                bad += 1
            elif new['sha256'] != entry['sha256']:
                if entry['byte_stable']:
                    print(f'check: {rel} differs (sha256 {new["sha256"][:12]} != '
                          f'{entry["sha256"][:12]})')
                    bad += 1
                elif rel.endswith('.pth'):
                    other = non_volatile_differences(HERE / rel, Path(tmp) / rel)
                    if other:
                        print(f'check: {rel} differs beyond run-specific values: {other[:5]}')
                        bad += 1
                    else:
                        print(f'check: {rel} differs only in run-specific values (timestamps, '
                              'work dir, wall-clock times)')
                else:
                    print(f'check: {rel} differs (not byte-stable by design)')
        for rel in sorted(set(fresh) - set(manifest['files'])):
            print(f'check: {rel} is new (not in {MANIFEST})')
            bad += 1
    print('check: OK, every byte-stable file is identical' if not bad else
          f'check: {bad} problem(s)')
    return 1 if bad else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='regenerate into a temporary directory and compare with MANIFEST.json')
    parser.add_argument('--manifest-only', action='store_true',
                        help='do not run generators: rewrite MANIFEST.json from the files on disk '
                             '(needs no oracle env)')
    parser.add_argument('--only', nargs='+', choices=GENERATORS,
                        help='run only these generators (with --check, compare only their files)')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / 'tests' / 'oracle'))
    if args.check:
        return check(args.only)
    if args.manifest_only:
        results = scan(HERE)
    else:
        results = run_generators(HERE, args.only)
        on_disk = scan(HERE)
        for name, res in results.items():
            for rel in sorted(set(on_disk[name]['files']) - set(res['files'])):
                print(f'generate: warning: {rel} was not written by {name} (stale? delete it)')
        for name in GENERATORS:  # with --only: the other generators' files as they are
            if name not in results:
                results[name] = on_disk[name]
    results.update(scan_external(HERE))
    manifest = build_manifest(HERE, results)
    if 'not installed' in manifest['upstream'].values():
        if not args.manifest_only or not (HERE / MANIFEST).is_file():
            raise SystemExit('generate: the real mmcv/mmdet/mmengine are not installed here; '
                             f'run {COMMAND}')
        old = json.loads((HERE / MANIFEST).read_text(encoding='utf-8'))
        for key in ('upstream', 'torch', 'python', 'device'):  # those of the recording
            manifest[key] = old[key]
    _write_json(manifest, HERE / MANIFEST)
    print(f"generate: wrote reference/{MANIFEST}: {len(manifest['files'])} files, "
          f"{manifest['total_size']} bytes")
    return 0


if __name__ == '__main__':
    sys.exit(main())
