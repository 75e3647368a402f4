"""Core pieces: priorities, wrapper unwrapping, python -O, imports without OpenMMLab."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch.nn as nn

from compat_ema.core import Priority, get_priority, is_wrapper, register_wrapper, unwrap


@pytest.mark.parametrize('value, expected', [(0, 0), (100, 100), (49, 49), ('normal', 50),
                                             ('VERY_LOW', 90), (Priority.HIGH, 30)])
def test_get_priority(value, expected):
    assert get_priority(value) == expected


def test_get_priority_errors():
    with pytest.raises(ValueError):
        get_priority(101)
    with pytest.raises(KeyError):
        get_priority('nope')
    with pytest.raises(TypeError):
        get_priority(1.5)


def test_wrappers():
    m = nn.Linear(2, 2)
    dp = nn.DataParallel(m)
    assert is_wrapper(dp, 'mmcv') and unwrap(dp, 'mmengine') is m

    class MyDP(nn.DataParallel):
        pass
    assert unwrap(MyDP(m), 'mmcv') is m

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = m
    assert unwrap(Custom(), 'mmcv') is not m
    register_wrapper(Custom, 'mmcv')
    assert unwrap(Custom(), 'mmcv') is m and unwrap(Custom(), 'mmengine') is not m


def _run(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, '-c', code], capture_output=True, text=True,
                          timeout=120)


def test_checks_survive_python_O():
    code = ('from compat_ema.mmcv import EMAHook\n'
            'from compat_ema.mmdet import ExpMomentumEMAHook\n'
            'from compat_ema.mmengine import EMAHook as E\n'
            'import torch\n'
            'from compat_ema.mmengine import ExponentialMovingAverage as X\n'
            'bad = [lambda: EMAHook(momentum=2), lambda: EMAHook(interval=0),\n'
            '       lambda: ExpMomentumEMAHook(momentum=0), lambda: E(begin_iter=-1),\n'
            '       lambda: X(torch.nn.Linear(1, 1), momentum=1.0)]\n'
            'n = 0\n'
            'for f in bad:\n'
            '    try:\n'
            '        f()\n'
            '    except AssertionError:\n'
            '        n += 1\n'
            'print(n)\n')
    out = _run(code, '-O')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '5'


def test_import_pulls_no_openmmlab_package():
    code = ('import sys, compat_ema, compat_ema.mmcv, compat_ema.mmdet, compat_ema.mmengine, '
            'compat_ema.registry\n'
            'compat_ema.registry.HOOKS.known_names()\n'
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmdet", "mmengine")]\n'
            'print(bad)')
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
