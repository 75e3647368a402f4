"""Record mmdet 3.3.0 / mmyolo 0.6.0 ``ExpMomentumEMA`` trajectories from the REAL upstream files.

Oracle env only: the two upstream ``ema.py`` files are executed by
``tests/oracle/native.py`` (extracted from the wheels by
``tests/oracle/extract_native.py``; ``COMPAT_EMA_NATIVE_DIR`` says where) on
the real mmengine 0.10.7, and driven through each scenario of
``native.golden_cases()``: ``update_parameters`` directly, with another model
object, or through the real mmengine ``EMAHook`` with ``begin_iter``, a val swap
and a checkpoint save followed by ``load_from`` or resume. Every snapshot (the
averaged model's state including ``steps`` and non-persistent buffers, the
source state it was fed, swapped/checkpoint contents) goes into
``<out_dir>/<case>.pt`` (``reference/native/``), a compat_ema golden file, kind
``trajectory``, with the case in its meta. Output is byte-identical on
regeneration. Never imports compat_ema.

Run through ``reference/generate.py``, or alone:
``.tox/oracle/bin/python reference/gen_native.py [OUT_DIR]``.
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

import native  # noqa: E402
from _format import fingerprint, is_class_child, record_per_class, write_trajectories  # noqa: E402


def upstream_versions() -> dict:
    """Versions of what the recording used (the native files are pinned by extract_native.py)."""
    import mmengine
    return {'torch': torch.__version__, 'mmengine': mmengine.__version__, 'mmdet': '3.3.0',
            'mmyolo': '0.6.0', 'device': 'cpu'}


def record(case: dict):
    """``(labels, snapshots)`` of ``case`` driven through the real class / real EMAHook."""
    from mmengine.hooks import EMAHook
    cls = native.mmdet3_cls() if case['target'] == 'mmdet3' else native.mmyolo_cls()
    src = native.source_states(case, 'src')
    arg = native.source_states(case, 'arg') if case['driver'] == 'other' else None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return native.drive(case, cls, lambda **kw: EMAHook(ema_type=cls, **kw), src, arg)


def main(out_dir: Path) -> List[Path]:
    """Write one golden file per case into ``out_dir``; return the paths (every kernel class
    this CPU can run, one child process each: ``_format.record_per_class``)."""
    if not is_class_child():
        return record_per_class(Path(__file__), out_dir)
    return write_trajectories(out_dir, native.golden_cases(), record, upstream_versions,
                              environment=fingerprint())


if __name__ == '__main__':
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / 'native'
    for p in main(target):
        print(p)
