"""Conversion on the REAL checkpoints in reference/checkpoints (written by the real mmcv 1.6.0,
mmdet 2.28.2 and mmengine 0.10.7 runners; see reference/gen_checkpoints.py).

Expected values come from the files themselves plus the manifest, whose ``raw_side`` was
observed in the real run (the side equal to the live raw weights captured right after the
optimizer step), never from the code under test.
"""
from __future__ import annotations

import contextlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from compat_ema import checkpoint as C
from compat_ema.cli import main as cli
from compat_ema.core.torch_features import bits_view
from helpers import torch_load

pytestmark = pytest.mark.golden  # re-run by .ci/run under other CPU/BLAS/thread settings

REF = Path(__file__).resolve().parents[1] / 'reference' / 'checkpoints'


MANIFEST = json.loads((REF / 'manifest.json').read_text())['files']
LEGACY = sorted(n for n, i in MANIFEST.items() if i['generation'] != 'mmengine')
ENGINE = sorted(n for n, i in MANIFEST.items() if i['generation'] == 'mmengine')


class _HistoryBuffer:
    """Stand-in for mmengine's HistoryBuffer, used only by the test's own reference load."""

    def min(self):
        pass

    max = mean = current = min


@contextlib.contextmanager
def _fake_mmengine():
    names = ['mmengine', 'mmengine.logging', 'mmengine.logging.history_buffer']
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    sys.modules['mmengine.logging.history_buffer'].HistoryBuffer = _HistoryBuffer
    try:  # files written under numpy 2 name numpy._core; numpy 1.x calls it numpy.core
        import numpy._core.multiarray  # noqa: F401
    except ImportError:
        import numpy.core.multiarray
        for n in ('numpy._core', 'numpy._core.multiarray'):
            saved.setdefault(n, sys.modules.get(n))
        sys.modules['numpy._core'] = sys.modules['numpy.core']
        sys.modules['numpy._core.multiarray'] = numpy.core.multiarray
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def raw_load(path):
    """The test's own reference load: a plain full torch.load (mmengine's class faked)."""
    with _fake_mmengine():
        return torch_load(path, map_location='cpu', weights_only=False)


def ema_name(k):
    return 'ema_' + k.replace('.', '_')


def bits(t: torch.Tensor):
    return t.dtype, tuple(t.shape), bits_view(t.detach().reshape(-1)).tolist()


def assert_identical(a, b, where='ckpt'):
    """Same structure, same key order, every tensor bitwise equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert bits(a) == bits(b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, list(a), list(b))
        for k in a:
            assert_identical(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f'{where}[{i}]')
    else:
        assert a == b, (where, a, b)


def legacy_sides(name):
    """(raw, ema) dicts for the tracked keys of a real legacy file, by the observed raw side."""
    info = MANIFEST[name]
    sd = raw_load(REF / name)['state_dict']
    tracked = [k for k in info['model_keys'] if ema_name(k) in sd]
    if info['raw_side'] == 'params':
        return {k: sd[k] for k in tracked}, {k: sd[ema_name(k)] for k in tracked}, sd
    assert info['raw_side'] == 'ema_keys'
    return {k: sd[ema_name(k)] for k in tracked}, {k: sd[k] for k in tracked}, sd


def iters_done(info):
    return info['meta_iter'] + (1 if info['runner'] == 'IterBasedRunner' else 0)


@pytest.mark.parametrize('name', LEGACY)
def test_legacy_to_mmengine_layout(name, tmp_path):
    info = MANIFEST[name]
    out = tmp_path / 'engine.pth'
    C.convert(REF / name, out, to='mmengine', source_priority=info['priority'])
    ck = raw_load(out)
    raw, ema, sd = legacy_sides(name)
    assert list(ck)[:2] == ['meta', 'state_dict'] and 'ema_state_dict' in ck
    assert list(ck['state_dict']) == info['model_keys']
    esd = ck['ema_state_dict']
    assert list(esd) == ['steps'] + ['module.' + k for k in info['model_keys']]
    assert esd['steps'].dtype == torch.long and int(esd['steps']) == iters_done(info)
    for k in info['model_keys']:
        if k in ema:
            assert bits(ck['state_dict'][k]) == bits(ema[k]), k        # mmengine: EMA here
            assert bits(esd['module.' + k]) == bits(raw[k]), k         # raw in ema_state_dict
        else:  # untracked buffers: the live values on both sides
            assert bits(ck['state_dict'][k]) == bits(sd[k]) == bits(esd['module.' + k]), k
    # docs/runner-behaviour.md#mmcv-checkpoint vs #mmengine-checkpoint: same convention
    if info['runner'] == 'EpochBasedRunner':
        assert (ck['meta']['epoch'], ck['meta']['iter']) == (info['meta_epoch'], info['meta_iter'])
    else:  # mmcv iter runner saves iter = done - 1; mmengine iter loop: epoch 0, iter = done
        assert (ck['meta']['epoch'], ck['meta']['iter']) == (0, info['meta_iter'] + 1)
    assert ck['message_hub'] == {'log_scalars': {}, 'runtime_info': {}, 'resumed_keys': {}}
    assert_identical(raw_load(REF / name)['optimizer'], ck['optimizer'])
    # the real mmengine loads with torch's default weights_only=True: only plain types inside
    torch_load(out, weights_only=True)


@pytest.mark.parametrize('name', LEGACY)
def test_round_trip_through_mmengine_is_exact(name, tmp_path):
    info = MANIFEST[name]
    mid, back = tmp_path / 'engine.pth', tmp_path / 'back.pth'
    C.convert(REF / name, mid, to='mmengine', source_priority=info['priority'])
    target = 'mmdet' if info['generation'] == 'mmdet' else 'mmcv'
    C.convert(mid, back, to=target)
    assert_identical(raw_load(REF / name), raw_load(back))


@pytest.mark.parametrize('name', [n for n in LEGACY if 'skip0' in n])
def test_mmdet_side_detected_from_integer_buffers(name):
    """skip_buffers=False: the stale num_batches_tracked copy marks the EMA side
    (docs/runner-behaviour.md#mmdet-checkpoint)."""
    rep = C.inspect(REF / name)
    swapped = MANIFEST[name]['raw_side'] == 'ema_keys'
    assert rep.ema_side.startswith('model keys' if swapped else 'ema_* buffers')
    assert not any('ASSUMED' in e for e in rep.evidence)
    assert rep.generation == 'mmdet'


def test_legacy_side_unknown_without_evidence_and_overridable():
    rep = C.inspect(REF / 'mmcv_epoch_p49.pth')
    assert rep.ema_side.startswith('UNKNOWN')
    rep = C.inspect(REF / 'mmcv_epoch_p49.pth', priority=49)
    assert rep.ema_side.startswith('model keys')
    rep = C.inspect(REF / 'mmcv_iter_normal.pth', priority=49)   # iter runner never swaps
    assert rep.ema_side.startswith('ema_* buffers') and rep.by_epoch is False
    assert rep.iters_done == MANIFEST['mmcv_iter_normal.pth']['meta_iter'] + 1


@pytest.mark.parametrize('name', ENGINE)
@pytest.mark.parametrize('target', ['mmcv', 'mmdet'])
def test_mmengine_to_legacy(name, target, tmp_path):
    info = MANIFEST[name]
    src = raw_load(REF / name)
    out = tmp_path / 'legacy.pth'
    C.convert(REF / name, out, to=target)
    ck = raw_load(out)
    assert list(ck) == ['meta', 'state_dict', 'optimizer']
    sd = ck['state_dict']
    params = info['param_keys']
    if 'ema_state_dict' not in src:
        assert list(sd) == info['model_keys']
        assert not any(k.startswith('ema_') for k in sd)
        return
    esd = src['ema_state_dict']
    by_iter = info['loop'] == 'IterBasedTrainLoop'
    for k in info['model_keys']:
        if k in params or (target == 'mmdet' and ema_name(k) in sd):
            ema, raw = src['state_dict'][k], esd['module.' + k]
            if by_iter:   # never swapped under IterBasedRunner: parameters raw
                assert bits(sd[k]) == bits(raw) and bits(sd[ema_name(k)]) == bits(ema), k
            else:         # default epoch layout: parameters EMA (resumed via resume_from)
                assert bits(sd[k]) == bits(ema) and bits(sd[ema_name(k)]) == bits(raw), k
        else:
            assert ema_name(k) not in sd
            assert bits(sd[k]) == bits(esd['module.' + k]), k
    assert [k for k in sd if k.startswith('ema_')] == [
        ema_name(k) for k in info['model_keys'] if ema_name(k) in sd]
    # mmcv IterBasedRunner convention: iter = completed - 1
    # (docs/runner-behaviour.md#mmcv-checkpoint)
    if by_iter:
        assert (ck['meta']['epoch'], ck['meta']['iter']) == (1, info['meta_iter'] - 1)
    else:
        assert (ck['meta']['epoch'], ck['meta']['iter']) == (info['meta_epoch'], info['meta_iter'])
    assert 'message_hub' not in ck
    torch_load(out, weights_only=True)


def test_mmengine_param_keys_explicit_and_round_trip(tmp_path):
    name = 'mmengine_epoch_ema.pth'
    keys = tmp_path / 'params.txt'
    keys.write_text('\n'.join(MANIFEST[name]['param_keys']) + '\n')
    out, back = tmp_path / 'l.pth', tmp_path / 'e.pth'
    assert cli(['convert', str(REF / name), str(out), '--to', 'mmcv', '--param-keys',
                str(keys), '-q']) == 0
    sd = raw_load(out)['state_dict']
    assert [k for k in sd if k.startswith('ema_')] == [ema_name(k) for k in
                                                      MANIFEST[name]['param_keys']]
    C.convert(out, back, to='mmengine')
    src, got = raw_load(REF / name), raw_load(back)
    for key in ('state_dict', 'ema_state_dict', 'optimizer', 'meta'):
        assert_identical(src[key], got[key], key)


def test_mmcv_to_mmdet_and_back(tmp_path):
    name = 'mmcv_epoch_normal.pth'
    a, b = tmp_path / 'det.pth', tmp_path / 'cv.pth'
    C.convert(REF / name, a, to='mmdet', skip_buffers=False, source_priority='NORMAL')
    sd = raw_load(a)['state_dict']
    src = raw_load(REF / name)['state_dict']
    assert 'ema_bn_running_mean' in sd and 'ema_bn_num_batches_tracked' in sd
    assert bits(sd['ema_bn_running_mean']) == bits(src['bn.running_mean'])
    for k in MANIFEST[name]['param_keys']:          # layout kept: NORMAL, params raw
        assert bits(sd[k]) == bits(src[k]) and bits(sd[ema_name(k)]) == bits(src[ema_name(k)])
    C.convert(a, b, to='mmcv')
    out = raw_load(b)
    assert list(out['state_dict']) == list(src)
    for k in src:
        assert bits(out['state_dict'][k]) == bits(src[k]), k


def test_target_priority_changes_layout(tmp_path):
    name = 'mmcv_epoch_normal.pth'
    out = tmp_path / 'p49.pth'
    C.convert(REF / name, out, to='mmcv', target_priority=49, source_priority='NORMAL')
    raw, ema, _ = legacy_sides(name)
    sd = raw_load(out)['state_dict']
    for k in raw:
        assert bits(sd[k]) == bits(ema[k]) and bits(sd[ema_name(k)]) == bits(raw[k])


@pytest.mark.parametrize('name', LEGACY + ENGINE)
def test_export_ema(name, tmp_path):
    info = MANIFEST[name]
    out = tmp_path / 'ema.pth'
    if info['generation'] != 'mmengine' or info['hook']:
        C.export_ema(REF / name, out, priority=info.get('priority'))
    else:
        with pytest.raises(C.CheckpointError, match='no EMA weights'):
            C.export_ema(REF / name, out)
        assert not out.exists()
        return
    sd = torch_load(out, weights_only=True)
    assert list(sd) == info['model_keys']
    src = raw_load(REF / name)
    if info['generation'] == 'mmengine':
        assert_identical(src['state_dict'], dict(sd))
    else:
        _, ema, live = legacy_sides(name)
        for k in info['model_keys']:
            assert bits(sd[k]) == bits(ema.get(k, live[k])), k


def test_legacy_serialization_format_reported_and_converted(tmp_path):
    old = tmp_path / 'old.pth'
    torch.save(raw_load(REF / 'mmcv_epoch_normal.pth'), old, _use_new_zipfile_serialization=False)
    assert C.detect_serialization(old) == 'legacy'
    assert C.inspect(old).serialization.startswith('legacy non-zip')
    out = tmp_path / 'e.pth'
    C.convert(old, out, to='mmengine', source_priority='NORMAL')
    assert C.detect_serialization(out) == 'zip'


def test_inspect_mmengine_reports_placeholders_not_suspicious():
    rep = C.inspect(REF / 'mmengine_epoch_ema.pth')
    assert rep.safe and rep.generation == 'mmengine' and rep.steps == 6
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in rep.placeholders
    ck = C.load(REF / 'mmengine_epoch_ema.pth')
    hb = ck['message_hub']['log_scalars']['train/loss']
    assert isinstance(hb, C.Opaque) and hb.upstream.endswith('HistoryBuffer')
    assert 'max_length' in hb.state        # the pickled state, recorded, nothing called


def test_cli_inspect_json(capsys):
    assert cli(['inspect', str(REF / 'mmengine_iter_ema.pth'), '--json']) == 0
    d = json.loads(capsys.readouterr().out)
    assert d['generation'] == 'mmengine' and d['steps'] == 4 and d['by_epoch'] is False
    assert d['meta_epoch'] == 0 and d['meta_iter'] == 4 and d['safe'] is True


def test_cli_convert_and_export(tmp_path, capsys):
    out = tmp_path / 'e.pth'
    assert cli(['convert', str(REF / 'mmdet_epoch_p49_skip1.pth'), str(out), '--to', 'mmengine',
                '--source-priority', '49']) == 0
    assert 'given hook priority' in capsys.readouterr().out
    assert cli(['convert', str(REF / 'mmdet_epoch_p49_skip1.pth'), str(out), '--to',
                'mmengine']) == 1
    assert 'exists' in capsys.readouterr().err
    assert cli(['export-ema', str(out), str(tmp_path / 'w.pth'), '-q']) == 0
    w = torch_load(tmp_path / 'w.pth', weights_only=True)
    _, ema, _ = legacy_sides('mmdet_epoch_p49_skip1.pth')
    assert bits(w['fc.weight']) == bits(ema['fc.weight'])


def test_legacy_without_ema_and_mmengine_to_mmengine(tmp_path):
    ck = raw_load(REF / 'mmcv_epoch_normal.pth')
    ck['state_dict'] = type(ck['state_dict'])(
        (k, v) for k, v in ck['state_dict'].items() if not k.startswith('ema_'))
    plain = tmp_path / 'plain.pth'
    torch.save(ck, plain)
    out = tmp_path / 'e.pth'
    res = C.convert(plain, out, to='mmengine')
    got = raw_load(out)
    assert 'ema_state_dict' not in got and list(got['state_dict']) == list(ck['state_dict'])
    assert res.source == 'mmcv' and C.inspect(plain).ema_side == 'none (no ema_* buffers)'
    with pytest.raises(C.CheckpointError, match='no EMA weights'):
        C.export_ema(plain, tmp_path / 'w.pth')
    with pytest.raises(C.CheckpointError, match='already an mmengine checkpoint'):
        C.convert(REF / 'mmengine_epoch_ema.pth', tmp_path / 'x.pth', to='mmengine')
    assert not (tmp_path / 'w.pth').exists() and not (tmp_path / 'x.pth').exists()
