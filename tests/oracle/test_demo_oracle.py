"""The plot paths of ``compat-ema demo`` and ``compat-ema schedule --plot`` (matplotlib is
installed in the oracle env; the default env checks the message for its absence)."""
from __future__ import annotations

import pytest


def test_demo_and_schedule_plots(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    from compat_ema.cli import main as cli
    from compat_ema.demo_showcase import showcase

    text = showcase(str(tmp_path / 'demo'))
    for name in ('legacy_yolox_style', 'legacy_mmcv_style'):
        png = tmp_path / 'demo' / f'{name}_momentum.png'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'plot: skipped' not in text and text.count('_momentum.png') == 2
    out = tmp_path / 'm.png'
    assert cli(['schedule', 'mmdet.ExpMomentumEMAHook()', '--iters', '100', '--plot',
                str(out)]) == 0
    assert out.read_bytes()[:4] == b'\x89PNG'
    assert cli(['schedule', 'mmcv.EMAHook()', '--plot', str(out)]) == 1  # exists, no --force
    assert '--force' in capsys.readouterr().err
    assert cli(['schedule', 'mmcv.EMAHook()', '--plot', str(out), '--force']) == 0
