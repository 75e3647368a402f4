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
command, the sha256 and size of every file, the environment fingerprint of the
machine that generated them (``environment``: torch build, CPU model, ATen
capability, BLAS/ISA, threads) and ``last_regeneration`` (when, which
generators, on which fingerprint) for the last real run. Files of
``gen_checkpoints`` carry the runners' timestamps (mmcv meta ``time``, mmengine
meta ``time``), so their bytes differ between recordings.

``--check`` regenerates into a temporary directory and reports, per file:

* ``identical``: the same bytes;
* ``environment-only``: differs only where the machine shows: the fingerprint in a
  golden file's meta or a trace's header, the kernel classes a CPU can record (a
  golden's data for every class both runs recorded is bitwise equal), the
  run-specific values of a checkpoint (:data:`VOLATILE`), or, when the training
  key of the regenerating machine is not the recording's (another CPU model,
  BLAS/ISA, thread count), training floats: a trace's floats whose identity
  pattern, counters and keys are equal, a checkpoint's tensors whose keys, dtypes
  and shapes are equal;
* ``DIFFERS``: anything else (exit status 1).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

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


def _full_load() -> dict:
    """``weights_only=False`` where torch has the keyword (>= 1.13); torch 1.8-1.12 load fully."""
    import inspect
    import torch
    return {'weights_only': False} if 'weights_only' in inspect.signature(torch.load).parameters else {}


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


def _fingerprint() -> dict:
    sys.path.insert(0, str(HERE))
    from _format import fingerprint
    return fingerprint()


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
        'environment': _fingerprint(),
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
    a = torch.load(str(old), map_location='cpu', **_full_load())
    b = torch.load(str(new), map_location='cpu', **_full_load())
    return [p for p in _diff_paths(a, b)
            if not any(fnmatch.fnmatchcase(p.split('.HistoryBuffer')[0], pat) for pat in VOLATILE)]


def _training_key(env: Optional[dict]) -> tuple:
    env = env or {}
    blas = env.get('blas') or {}
    return (str(env.get('torch', '')).split('+')[0], env.get('machine'), env.get('cpu_model'),
            env.get('cpu_capability'), blas.get('name'), blas.get('isa'), env.get('threads'))


def _golden_same(old: Path, new: Path) -> Optional[str]:
    """None when two golden files (.pt) differ only in environment fields; else where."""
    import torch
    # weights-only where torch has it (>= 1.13); older torch: a full load of the two recordings
    kw = {'weights_only': True} if _full_load() else {}
    a = torch.load(str(old), map_location='cpu', **kw)
    b = torch.load(str(new), map_location='cpu', **kw)
    ma, mb = json.loads(a.pop('meta_json')), json.loads(b.pop('meta_json'))
    ca, cb = ma.pop('kernel_classes', [None]), mb.pop('kernel_classes', [None])
    for m in (ma, mb):
        m.pop('environment', None)
    if ma != mb:
        return 'meta'
    if ca[0] != cb[0]:
        return f'primary kernel class {ca[0]} != {cb[0]}'
    va, vb = a.pop('variants', {}), b.pop('variants', {})
    a.pop('version'), b.pop('version')
    bad = _diff_paths(a, b)
    if bad:
        return f'data {bad[:3]}'
    for cls in set(ca[1:]) & set(cb[1:]):
        if _diff_paths(va.get(cls, {}), vb.get(cls, {})):
            return f'data of kernel class {cls}'
    return None


def _identity(obj, names=None):
    """Floats and digests replaced by their order of first appearance (equality pattern)."""
    import re
    names = {} if names is None else names
    if isinstance(obj, str) and re.match(r'^(-?0x[0-9a-f.]+p[+-]?\d+|[0-9a-f]{16})$', obj):
        return names.setdefault(obj, f'v{len(names)}')
    if isinstance(obj, dict):
        done = {k: _identity(obj[k], names) for k in sorted(obj)}
        return {k: done[k] for k in obj}
    if isinstance(obj, list):
        return [_identity(v, names) for v in obj]
    return obj


def _trace_same(old: Path, new: Path, training_differs: bool) -> Optional[str]:
    """None when two traces differ only in environment fields; else where."""
    a = json.loads(old.read_text(encoding='utf-8'))
    b = json.loads(new.read_text(encoding='utf-8'))
    a.pop('environment', None)
    b.pop('environment', None)
    if a == b:
        return None
    if not training_differs:
        return 'values (same training key)'
    if a['spec'] != b['spec']:
        return 'spec'
    probes = [{n: [[r[6], r[7], r[10], r[12]] for r in p['trace']]
               + [[p['final'].get('w'), p['final'].get('ema_w')]] for n, p in x['phases'].items()}
              for x in (a, b)]
    if _identity(probes[0]) != _identity(probes[1]):
        return 'identity pattern of the training floats'
    for phase, pa in a['phases'].items():
        pb = b['phases'].get(phase) or {}
        rows = [[[r[i] for i in (0, 1, 2, 3, 4, 5, 8, 9, 11)] for r in p['trace']] for p in (pa, pb)]
        if rows[0] != rows[1] or pa['hooks'] != pb['hooks'] or pa['error'] != pb['error']:
            return f'{phase}: hook order or counters'
        ka = {n: (c['keys'], c['meta'], list(c['state_dict'])) for n, c in pa['checkpoints'].items()}
        kb = {n: (c['keys'], c['meta'], list(c['state_dict'])) for n, c in pb['checkpoints'].items()}
        if ka != kb:
            return f'{phase}: checkpoint keys or meta'
    return None


def _checkpoint_same(old: Path, new: Path, training_differs: bool) -> Optional[str]:
    other = non_volatile_differences(old, new)
    if not other:
        return None
    if not training_differs:
        return f'beyond run-specific values: {other[:5]}'
    import torch
    a = torch.load(str(old), map_location='cpu', **_full_load())
    b = torch.load(str(new), map_location='cpu', **_full_load())

    def shapes(x):
        if isinstance(x, torch.Tensor):
            return (str(x.dtype), tuple(x.shape))
        if isinstance(x, dict):
            return {k: shapes(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [shapes(v) for v in x]
        return type(x).__name__
    tensors_only = all(isinstance(_get(a, p), torch.Tensor) for p in other)
    return None if tensors_only and shapes(a) == shapes(b) else f'structure: {other[:5]}'


def _get(obj, path: str):
    import re
    for part in re.findall(r'/([^/\[]+)|\[(\d+)\]', path):
        key, idx = part
        try:
            obj = obj[int(idx)] if idx else (obj[key] if key in obj else obj[int(key)])
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return obj


def classify(rel: str, old: Path, new: Path, old_env: Optional[dict],
             new_env: Optional[dict]) -> Tuple[str, str]:
    """``(status, why)`` for one regenerated file: 'identical', 'environment-only', 'DIFFERS'."""
    if sha256(old) == sha256(new):
        return 'identical', ''
    training_differs = _training_key(old_env) != _training_key(new_env)
    if rel.endswith('.json') and rel.startswith('traces/'):
        why = _trace_same(old, new, training_differs)
    elif rel.endswith('.pth'):
        why = _checkpoint_same(old, new, training_differs)
    elif rel.endswith('.pt'):
        why = _golden_same(old, new)
    elif rel == 'checkpoints/manifest.json':
        a = json.loads(old.read_text(encoding='utf-8'))
        b = json.loads(new.read_text(encoding='utf-8'))
        a.pop('environment', None)
        b.pop('environment', None)
        for m in (a, b):  # digests of training numerics; sizes move with pickled timestamps
            for e in m.get('files', {}).values():
                e.pop('size', None)
                e.pop('sha256', None)
                if training_differs:
                    e['digests'] = sorted(e.get('digests', {}))
        why = None if a == b else 'content'
    else:
        why = 'bytes'
    if why is None:
        if rel.endswith('.pth'):
            return 'environment-only', ('run-specific values (timestamps, work dir, wall-clock '
                                        'times)' + ('; training numerics of another environment'
                                                    if training_differs else ''))
        return 'environment-only', ('training numerics of another environment'
                                    if training_differs else 'environment fields (fingerprint, '
                                    'kernel classes)')
    return 'DIFFERS', why


def check(only: Optional[List[str]] = None) -> int:
    """Regenerate into a temp dir; classify every file against reference/ (see module doc)."""
    manifest = json.loads((HERE / MANIFEST).read_text(encoding='utf-8'))
    old_env = manifest.get('environment')
    bad = 0
    counts: Dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results = run_generators(Path(tmp), only)
        fresh = build_manifest(Path(tmp), results)
        new_env = fresh['environment']
        print(f'check: reference/ recorded on {_describe(old_env)}')
        print(f'check: regenerated on      {_describe(new_env)}')
        for rel, entry in manifest['files'].items():
            if (only and entry['generator'] not in only) or entry['generator'].startswith(
                    'external:'):
                continue
            if rel not in fresh['files']:
                status, why = 'DIFFERS', 'not regenerated'
            else:
                status, why = classify(rel, HERE / rel, Path(tmp) / rel, old_env, new_env)
            counts[status] = counts.get(status, 0) + 1
            bad += status == 'DIFFERS'
            print(f'check: {status:16} {rel}' + (f' ({why})' if why else ''))
        for rel in sorted(set(fresh['files']) - set(manifest['files'])):
            print(f'check: {"DIFFERS":16} {rel} (new: not in {MANIFEST})')
            bad += 1
    print(f'check: {counts}; ' + ('OK: no file differs beyond the environment' if not bad else
                                  f'{bad} file(s) differ'))
    return 1 if bad else 0


def _describe(env: Optional[dict]) -> str:
    if not env:
        return 'an unrecorded environment'
    blas = env.get('blas') or {}
    return (f"torch {env.get('torch')}, {env.get('cpu_model')}, capability "
            f"{env.get('cpu_capability')}, BLAS {blas.get('name')}/{blas.get('isa')}, "
            f"{env.get('threads')} thread(s)")


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
    import torch
    torch.set_num_threads(1)  # pinned: every generator records at 1 thread (as its fingerprint says)
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
        for key in ('upstream', 'torch', 'python', 'device', 'environment'):  # the recording's
            if key in old:
                manifest[key] = old[key]
    old = json.loads((HERE / MANIFEST).read_text(encoding='utf-8')) \
        if (HERE / MANIFEST).is_file() else {}
    if args.manifest_only:
        for key in ('environment', 'last_regeneration'):
            if key in old:
                manifest[key] = old[key]
    else:
        manifest['last_regeneration'] = {
            'when': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'generators': sorted(n for n, r in results.items() if r.get('status') == 'ran'),
            'environment': manifest['environment'],
            'previous': {k: v for k, v in (old.get('last_regeneration') or {}).items()
                         if k != 'previous'} or None}
    _write_json(manifest, HERE / MANIFEST)
    print(f"generate: wrote reference/{MANIFEST}: {len(manifest['files'])} files, "
          f"{manifest['total_size']} bytes")
    return 0


if __name__ == '__main__':
    sys.exit(main())
