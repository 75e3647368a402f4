"""Record mmedit 0.16.1 / mmagic 1.2.0 / mmgen 0.7.3 ``ExponentialMovingAverageHook`` trajectories
from the REAL upstream files.

Oracle env only: the three upstream files (extracted from the wheels / mmgen's sdist by
``tests/oracle/extract_native.py``; ``COMPAT_EMA_NATIVE_DIR`` says where) are
executed by ``tests/oracle/gan_native.py`` on the real mmcv 1.6.0 / mmengine
0.10.7 and driven through each scenario of ``gan_native.golden_cases()``
(``before_run`` then one ``after_train_iter`` per step). Every snapshot (each
``*_ema`` module's state with non-persistent buffers, and the source states it
was fed) goes into ``<out_dir>/<case>.pt`` (``reference/gan/``), a compat_ema
golden file, kind ``trajectory``, with the case in its meta. Byte-identical on
regeneration. Never imports compat_ema.

Run through ``reference/generate.py``, or alone:
``.tox/oracle/bin/python reference/gen_gan.py [OUT_DIR]``.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import List

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / 'tests' / 'oracle'))

import gan_native  # noqa: E402
from _format import write_trajectories  # noqa: E402


def upstream_versions() -> dict:
    import mmcv
    import mmengine
    return {'torch': torch.__version__, 'mmcv': mmcv.__version__, 'mmengine': mmengine.__version__,
            'mmedit': '0.16.1', 'mmagic': '1.2.0', 'mmgen': '0.7.3', 'device': 'cpu'}


def record(case: dict):
    """``(labels, snapshots)`` of ``case`` driven through the real hook of its family."""
    cls = {'mmedit': gan_native.mmedit_cls, 'mmagic': gan_native.mmagic_cls,
           'mmgen': gan_native.mmgen_cls}[case['family']]()
    src, aux = gan_native.source(case)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return gan_native.drive(case, cls, case['family'], src, aux)


def main(out_dir: Path) -> List[Path]:
    """Write one golden file per case into ``out_dir``; return the paths."""
    return write_trajectories(out_dir, gan_native.golden_cases(), record, upstream_versions)


if __name__ == '__main__':
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / 'gan'
    for p in main(target):
        print(p)
