"""Load the real upstream EMA code (oracle env only), with the workarounds of
docs/runner-behaviour.md#oracle-environment.

Never imported by compat_ema itself. ``available()`` says whether the real
mmcv 1.6.0, mmdet 2.28.2 and mmengine 0.10.7 can be loaded here.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path


def _stub_torchvision() -> None:
    if 'torchvision' not in sys.modules:
        stub = types.ModuleType('torchvision')
        stub.__version__ = '0.0'
        stub.__spec__ = importlib.machinery.ModuleSpec('torchvision', None)
        sys.modules['torchvision'] = stub


def load_file(name: str, path: Path):
    """Execute the Python file ``path`` as module ``name`` (registered in ``sys.modules``), once
    per process: a second call returns the module already there."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=None)
def mmcv_hooks():
    """The real ``mmcv.runner`` module (EMAHook, Hook, runners)."""
    _stub_torchvision()
    import mmcv.runner
    return mmcv.runner


@lru_cache(maxsize=None)
def mmdet_ema():
    """The real ``mmdet/core/hook/ema.py``, loaded directly (once per process)."""
    mmcv_hooks()
    spec = importlib.util.find_spec('mmdet')
    path = Path(spec.submodule_search_locations[0]) / 'core' / 'hook' / 'ema.py'
    return load_file('mmdet.core.hook.ema', path)


@lru_cache(maxsize=None)
def mmengine_mods():
    """``(mmengine.hooks, mmengine.model)`` of the real mmengine."""
    import mmengine.hooks
    import mmengine.model
    return mmengine.hooks, mmengine.model


def available() -> bool:
    try:
        import mmcv  # noqa: F401
        import mmengine  # noqa: F401
        if importlib.util.find_spec('mmdet') is None:
            return False
        return mmcv.__version__ == '1.6.0' and mmengine.__version__ == '0.10.7'
    except Exception:
        return False
