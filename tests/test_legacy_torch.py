"""torch 1.8 and later: the feature probes tell the truth, and nothing in a file ever runs.

compat_ema supports torch >= 1.8 (``compat_ema/core/torch_features.py``). torch 1.8-1.12 have
no ``torch.load(weights_only=...)``: there every safe read (``compat-ema inspect``/``convert``/
``export``, golden files) goes through compat_ema's restricted unpickler, and a hostile pickle
must run nothing there either. These tests run on every torch of the tox matrix; the
``py38-torch1.8.1`` env is the one without weights-only loading at all.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compat_ema import checkpoint as C
from compat_ema.cli import main as cli
from compat_ema.core import torch_features as F
from compat_ema.testing import golden
from helpers import torch_load

MMCV = Path(__file__).resolve().parents[1] / 'reference' / 'checkpoints' / 'mmcv_epoch_normal.pth'


def test_probes_match_what_torch_does():
    accepts = 'weights_only' in inspect.signature(torch.load).parameters
    assert F.LOAD_WEIGHTS_ONLY is accepts
    t = torch.arange(6, dtype=torch.float32)
    assert F.UNTYPED_STORAGE is hasattr(t, 'untyped_storage')
    assert F.storage_of(t).data_ptr() == t.data_ptr()
    assert F.storage_nbytes(t[2:]) == 24
    assert F.is_cpu(torch.nn.Parameter(t)) is True
    assert F.FOREACH_LERP is hasattr(torch, '_foreach_lerp_')
    desc = F.describe()
    assert desc['torch'] == torch.__version__ and desc['load_weights_only'] is accepts
    if F.LOAD_WEIGHTS_ONLY:
        torch.load(_saved(t), weights_only=True)
    else:
        with pytest.raises(TypeError):
            torch.load(_saved(t), weights_only=True)
    # the probe is by behaviour: torch 1.13 alone drops a custom pickle_module
    assert F.load_honours_pickle_module() is not torch.__version__.startswith('1.13.')


def _saved(t):
    import io
    buf = io.BytesIO()
    torch.save(t, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                   torch.complex64, torch.int64, torch.bool])
def test_bits_view_is_the_bytes(dtype):
    """``bits_view`` reinterprets without converting: +0.0 and -0.0 differ, NaN equals itself,
    and its bytes are the tensor's bytes (numpy reads them the same on every torch)."""
    x = torch.tensor([0.0, -0.0, 1.5, float('nan')] if dtype.is_floating_point
                     else [0, 1, 1, 0]).to(dtype)
    v = F.bits_view(x)
    assert not v.dtype.is_floating_point and not v.dtype.is_complex
    assert v.numel() * v.element_size() == x.numel() * x.element_size()
    assert torch.equal(F.bits_view(x.clone()), v)
    if dtype.is_floating_point:
        assert not torch.equal(v[0], v[1])                 # +0.0 vs -0.0: other bits
        if dtype in (torch.float32, torch.float64):
            assert v.numpy().tobytes() == x.numpy().tobytes()


class _CreatesFile:
    """Unpickling this would create a file (``open(path, 'w')``)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), 'w'))


class _RunsCommand:
    """Unpickling this would run a command (``subprocess.check_call``)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (subprocess.check_call, (['touch', str(self.path)],))


@pytest.mark.parametrize('payload,callable_name', [(_CreatesFile, 'open'),
                                                   (_RunsCommand, 'check_call')])
@pytest.mark.parametrize('legacy_format', [False, True], ids=['zip', 'legacy'])
def test_hostile_pickle_runs_nothing(tmp_path, capsys, payload, callable_name, legacy_format):
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pth'
    ck = torch_load(MMCV, weights_only=True)
    ck['meta']['payload'] = payload(marker)
    torch.save(ck, evil, _use_new_zipfile_serialization=not legacy_format)
    out = tmp_path / 'out.pth'
    with pytest.raises(C.UnsafeCheckpointError, match=f'refused to load .*{callable_name}'):
        C.load(evil)
    with pytest.raises(C.UnsafeCheckpointError, match=callable_name):
        C.convert(evil, out, to='mmengine')
    assert cli(['convert', str(evil), str(out), '--to', 'mmengine']) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('compat-ema convert: error:') and callable_name in err
    rep = C.inspect(evil)                         # described, the payload an inert placeholder
    assert not rep.safe and any(callable_name in s for s in rep.suspicious)
    assert cli(['inspect', str(evil)]) == 1
    assert 'SUSPICIOUS' in capsys.readouterr().out
    with pytest.raises(golden.GoldenFileError, match='cannot be read safely'):
        golden.load_golden(evil)
    assert not marker.exists() and not out.exists()


def test_the_hostile_file_is_live_under_a_plain_load(tmp_path):
    """Not vacuous: the same file DOES run its payload under a full ``torch.load`` on this
    torch (in a child process, creating a file in tmp_path only)."""
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pth'
    torch.save({'meta': {'payload': _RunsCommand(marker)}}, evil)
    code = ('import inspect, sys, torch; kw = {"weights_only": False} if "weights_only" in '
            'inspect.signature(torch.load).parameters else {}; torch.load(sys.argv[1], **kw)')
    subprocess.run([sys.executable, '-c', code, str(evil)], check=True, timeout=120,
                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)))
    assert marker.exists()
