"""Hostile and broken inputs: each one a clear one-line error and no output file, and
nothing in a file ever runs by default."""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Tuple

import pytest
import torch

from compat_ema import checkpoint as C
from compat_ema.cli import main as cli
from compat_ema.core.torch_features import LOAD_WEIGHTS_ONLY, weights_only_reads_floats
from helpers import torch_load

REF = Path(__file__).resolve().parents[1] / 'reference' / 'checkpoints'
MMCV = REF / 'mmcv_epoch_normal.pth'


class _RunsCommand:
    """Unpickling this calls os.system (the classic pickle attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _good():
    return torch_load(MMCV, weights_only=True)


def _evil_checkpoint(tmp_path: Path, how: str = 'zip') -> Tuple[Path, Path]:
    """``(file, marker)``: a real mmcv checkpoint whose meta, once unpickled, runs ``touch marker``;
    saved as ``how``: 'zip' or 'legacy' ``torch.save``, or a 'bare-pickle'."""
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pth'
    ck = _good()
    ck['meta']['payload'] = _RunsCommand(marker)
    if how == 'zip':
        torch.save(ck, evil)
    elif how == 'legacy':
        torch.save(ck, evil, _use_new_zipfile_serialization=False)
    else:
        evil.write_bytes(pickle.dumps(ck, protocol=2))
    return evil, marker


def _no_output(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')] == []


@pytest.mark.parametrize('how', ['zip', 'legacy', 'bare-pickle'])
def test_pickle_that_would_run_a_command(tmp_path, capsys, how):
    evil, marker = _evil_checkpoint(tmp_path, how)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError) as err:
        C.load(evil)
    assert ('system' in str(err.value) and 'refused' in str(err.value)) or how == 'bare-pickle'
    with pytest.raises(C.CheckpointError):
        C.convert(evil, out, to='mmengine')
    with pytest.raises(C.CheckpointError):
        C.export_ema(evil, out)
    assert cli(['convert', str(evil), str(out), '--to', 'mmengine']) == 1
    err_line = capsys.readouterr().err.strip()
    assert err_line.startswith('compat-ema convert: error:') and '\n' not in err_line
    if how != 'bare-pickle':
        rep = C.inspect(evil)       # described, with the payload as an inert placeholder
        assert not rep.safe and any('system' in s for s in rep.suspicious)
        assert rep.generation == 'mmcv'
        assert cli(['inspect', str(evil)]) == 1
        assert 'SUSPICIOUS' in capsys.readouterr().out
    assert not marker.exists()
    _no_output(tmp_path, out)


def test_truncated_file(tmp_path):
    data = MMCV.read_bytes()
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(data[:len(data) // 2])
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match='truncated or corrupt'):
        C.convert(bad, out, to='mmengine')
    with pytest.raises(C.CheckpointError, match='truncated or corrupt'):
        C.inspect(bad)
    _no_output(tmp_path, out)


def test_truncated_legacy_file(tmp_path):
    old = tmp_path / 'old.pth'
    torch.save(_good(), old, _use_new_zipfile_serialization=False)
    data = old.read_bytes()
    old.write_bytes(data[:len(data) - 40])
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match='truncated or corrupt legacy'):
        C.convert(old, out, to='mmengine')
    _no_output(tmp_path, out)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / 'notes.pth'
    with zipfile.ZipFile(bad, 'w') as z:
        z.writestr('readme.txt', 'hello')
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match='not a torch checkpoint'):
        C.convert(bad, out, to='mmcv')
    _no_output(tmp_path, out)


def test_empty_file(tmp_path, capsys):
    bad = tmp_path / 'empty.pth'
    bad.write_bytes(b'')
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match='empty file'):
        C.convert(bad, out, to='mmengine')
    assert cli(['inspect', str(bad)]) == 1
    assert 'empty file' in capsys.readouterr().err
    _no_output(tmp_path, out)


def test_text_file(tmp_path):
    bad = tmp_path / 'x.pth'
    bad.write_text('not a checkpoint at all\n')
    with pytest.raises(C.CheckpointError, match='not a torch checkpoint'):
        C.load(bad)


def test_missing_state_dict(tmp_path):
    bad = tmp_path / 'nostate.pth'
    torch.save({'meta': {'epoch': 1, 'iter': 3}, 'optimizer': {}}, bad)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match="no 'state_dict'"):
        C.convert(bad, out, to='mmengine')
    rep = C.inspect(bad)
    assert rep.problems and "no 'state_dict'" in rep.problems[0]
    _no_output(tmp_path, out)


def test_shape_mismatch_legacy(tmp_path):
    ck = _good()
    ck['state_dict']['ema_fc_weight'] = torch.zeros(2, 4)
    bad = tmp_path / 'shape.pth'
    torch.save(ck, bad)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match=r'shape mismatch: fc.weight .*ema_fc_weight'):
        C.convert(bad, out, to='mmengine')
    _no_output(tmp_path, out)


def test_shape_mismatch_mmengine(tmp_path):
    eng = tmp_path / 'e.pth'
    C.convert(MMCV, eng, to='mmengine', source_priority='NORMAL')
    ck = torch_load(eng, weights_only=True)
    ck['ema_state_dict']['module.bn.bias'] = torch.zeros(4)
    torch.save(ck, eng)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match=r'shape mismatch.*bn.bias'):
        C.convert(eng, out, to='mmcv')
    _no_output(tmp_path, out)


def test_ambiguous_ema_keys(tmp_path):
    sd = OrderedDict([('ema_a_b_c', torch.ones(2)), ('a.b_c', torch.ones(2)),
                      ('a_b.c', torch.ones(2))])
    bad = tmp_path / 'amb.pth'
    torch.save({'meta': {'epoch': 1, 'iter': 1}, 'state_dict': sd}, bad)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match=r"ambiguous EMA key 'ema_a_b_c'.*a\.b_c.*a_b\.c"):
        C.convert(bad, out, to='mmengine')
    _no_output(tmp_path, out)


def test_duplicate_model_keys_given(tmp_path):
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match='duplicate model keys'):
        C.convert(MMCV, out, to='mmengine', source_priority='NORMAL', model_keys=['fc.weight', 'fc.weight'])
    _no_output(tmp_path, out)


def test_orphan_ema_key(tmp_path):
    ck = _good()
    ck['state_dict']['ema_head_weight'] = torch.zeros(3)
    bad = tmp_path / 'orphan.pth'
    torch.save(ck, bad)
    with pytest.raises(C.CheckpointError, match=r"EMA keys \['ema_head_weight'\] match no model"):
        C.convert(bad, tmp_path / 'out.pth', to='mmengine')


def test_unexpected_keys_in_ema_state_dict(tmp_path):
    eng = tmp_path / 'e.pth'
    C.convert(MMCV, eng, to='mmengine', source_priority='NORMAL')
    ck = torch_load(eng, weights_only=True)
    ck['ema_state_dict']['fc.weight'] = ck['ema_state_dict']['module.fc.weight']
    torch.save(ck, eng)
    with pytest.raises(C.CheckpointError,
                       match=r"unexpected keys in ema_state_dict: \['fc.weight'\]"):
        C.convert(eng, tmp_path / 'out.pth', to='mmcv')


@pytest.mark.parametrize('where', ['state_dict', 'steps', 'ema_state_dict'])
def test_non_tensor_values(tmp_path, where):
    eng = tmp_path / 'e.pth'
    C.convert(MMCV, eng, to='mmengine', source_priority='NORMAL')
    ck = torch_load(eng, weights_only=True)
    if where == 'state_dict':
        ck['state_dict']['fc.weight'] = [[0.0] * 4] * 3
        match = r"state_dict\['fc.weight'\] is a list, expected a tensor"
    elif where == 'steps':
        ck['ema_state_dict']['steps'] = 6
        match = r"ema_state_dict\['steps'\] is 6, expected an integer tensor"
    else:
        ck['ema_state_dict']['module.bn.weight'] = 'x'
        match = r"ema_state_dict\['module.bn.weight'\] is a str, expected a tensor"
    torch.save(ck, eng)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.CheckpointError, match=match):
        C.convert(eng, out, to='mmcv')
    with pytest.raises(C.CheckpointError, match=match):
        C.export_ema(eng, out)
    _no_output(tmp_path, out)


def test_non_tensor_in_legacy_state_dict(tmp_path):
    ck = _good()
    ck['state_dict']['ema_fc_bias'] = 0.5
    bad = tmp_path / 'b.pth'
    torch.save(ck, bad)
    with pytest.raises(C.CheckpointError, match=r"state_dict\['ema_fc_bias'\] is a float"):
        C.convert(bad, tmp_path / 'out.pth', to='mmengine')


def test_bad_meta_counter(tmp_path):
    ck = _good()
    ck['meta']['iter'] = '6'
    bad = tmp_path / 'b.pth'
    torch.save(ck, bad)
    with pytest.raises(C.CheckpointError, match=r"meta\['iter'\] is '6', expected an int"):
        C.convert(bad, tmp_path / 'out.pth', to='mmengine')


# ----------------------------------------------------------------------------- writing
def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / 'in.pth'
    src.write_bytes(MMCV.read_bytes())
    before = src.read_bytes()
    with pytest.raises(C.CheckpointError, match='is the input'):
        C.convert(src, src, to='mmengine', force=True)
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    with pytest.raises(C.CheckpointError, match='is the input'):
        C.convert(src, link, to='mmengine', force=True)
    hard = tmp_path / 'hard.pth'
    os.link(src, hard)
    with pytest.raises(C.CheckpointError, match='is the input'):
        C.export_ema(src, hard, force=True)
    assert src.read_bytes() == before


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep me')
    with pytest.raises(C.CheckpointError, match='exists'):
        C.convert(MMCV, out, to='mmengine', source_priority='NORMAL')
    assert out.read_bytes() == b'keep me'
    assert cli(['export-ema', str(MMCV), str(out), '-q', '--source-priority', 'NORMAL']) == 1
    assert out.read_bytes() == b'keep me'
    assert cli(['export-ema', str(MMCV), str(out), '-q', '--source-priority', 'NORMAL', '--force']) == 0
    assert list(torch_load(out, weights_only=True))[0] == 'fc.weight'


def test_missing_output_directory(tmp_path):
    with pytest.raises(C.CheckpointError, match='does not exist'):
        C.convert(MMCV, tmp_path / 'no' / 'out.pth', to='mmengine', source_priority='NORMAL')


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / 'out.pth'
    out.write_bytes(b'old')
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)          # the bytes are written ...
        raise OSError('disk full')           # ... and then the write fails

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        C.convert(MMCV, out, to='mmengine', source_priority='NORMAL', force=True)
    assert out.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.pth']


def test_trust_is_a_full_unpickle(tmp_path):
    """trust=True hands the file to torch.load(weights_only=False): a benign class loads."""
    ck = _good()
    ck['meta']['payload'] = OrderedDict(a=1)
    ck['meta']['fraction'] = __import__('fractions').Fraction(1, 3)
    f = tmp_path / 'f.pth'
    torch.save(ck, f)
    with pytest.raises(C.UnsafeCheckpointError, match='fractions.Fraction'):
        C.load(f)
    assert C.load(f, trust=True)['meta']['fraction'] == __import__('fractions').Fraction(1, 3)


def test_random_corruption_gives_checkpoint_errors_only(tmp_path):
    """Bytes flipped / files cut at random: a CheckpointError (or a valid result), never
    another exception, and never an output file after a failure."""
    import random
    rng = random.Random(1234)
    sources = [REF / 'mmcv_epoch_normal.pth', REF / 'mmengine_epoch_ema.pth',
               REF / 'mmdet_epoch_p49_skip0.pth']
    out = tmp_path / 'out.pth'
    for _ in range(40):
        data = bytearray(rng.choice(sources).read_bytes())
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        bad = tmp_path / 'bad.pth'
        bad.write_bytes(bytes(data))
        for to in ('mmengine', 'mmcv'):
            try:
                C.convert(bad, out, to=to)
            except C.CheckpointError:
                _no_output(tmp_path, out)
            else:
                out.unlink()
        try:
            C.inspect(bad)
        except C.CheckpointError:
            pass


@pytest.mark.skipif(not weights_only_reads_floats(),
                    reason="this torch's weights-only unpickler cannot read floats (torch 1.13), "
                           "or it has none (torch < 1.13: test_forced_weights_only_env_means_"
                           "nothing_without_weights_only)")
def test_forced_weights_only_env(tmp_path, monkeypatch):
    """TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 makes torch refuse custom unpicklers: compat_ema then uses
    torch's own weights-only loader (mmcv files load; mmengine's HistoryBuffer is refused, with
    a message naming the variable)."""
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    assert list(C.load(MMCV)) == ['meta', 'state_dict', 'optimizer']
    with pytest.raises(C.UnsafeCheckpointError,
                       match='TORCH_FORCE_WEIGHTS_ONLY_LOAD.*HistoryBuffer'):
        C.load(REF / 'mmengine_epoch_ema.pth')
    evil, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(C.UnsafeCheckpointError, match='system'):
        C.load(evil)
    assert not marker.exists()


@pytest.mark.skipif(LOAD_WEIGHTS_ONLY, reason='torch >= 1.13 honours the variable: '
                                             'test_forced_weights_only_env')
def test_forced_weights_only_env_means_nothing_without_weights_only(tmp_path, monkeypatch):
    """torch < 1.13 has no weights-only loader: the variable changes nothing and compat_ema's
    restricted unpickler still reads mmengine files inertly and refuses a command."""
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    assert list(C.load(MMCV)) == ['meta', 'state_dict', 'optimizer']
    assert 'message_hub' in C.load(REF / 'mmengine_epoch_ema.pth')
    evil, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(C.UnsafeCheckpointError, match='refused to load .*system'):
        C.load(evil)
    assert not marker.exists()


def test_inspect_flags_non_finite_weights(tmp_path, capsys):
    ck = _good()
    ck['state_dict']['ema_fc_bias'] = torch.tensor([0.0, float('nan'), 1.0])
    f = tmp_path / 'nan.pth'
    torch.save(ck, f)
    rep = C.inspect(f)
    assert rep.problems == ["non-finite values (NaN/Inf) in ['fc.bias']"]
    assert cli(['inspect', str(f)]) == 1
    assert 'PROBLEM: non-finite' in capsys.readouterr().out


def test_output_gets_the_usual_file_mode(tmp_path):
    out = tmp_path / 'out.pth'
    old = os.umask(0o022)
    try:
        C.export_ema(MMCV, out, priority='NORMAL')
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644
