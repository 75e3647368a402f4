"""Load the real mmdet 3.3.0 and mmyolo 0.6.0 ``ExpMomentumEMA`` files (oracle env only).

The two upstream files are executed directly (they are extracted from the
wheels by ``extract_native.py``; the packages are not installed, mmdet 2.28.2
owns the name ``mmdet`` here). Their imports are served by a temporary
``sys.modules`` shim, removed again after each file has run:

* ``mmdet.registry`` / ``mmyolo.registry``: ``MODELS`` is a real mmengine
  ``Registry`` child of mmengine's ``MODELS`` (scopes ``native_mmdet3`` and
  ``native_mmyolo``), so ``register_module()`` works as upstream;
* ``mmdet.models.layers`` (for mmyolo): exposes the real mmdet 3.3.0 class;
* ``mmengine.model`` is the real mmengine 0.10.7.

Where the files are: ``$COMPAT_EMA_NATIVE_DIR`` (set by the oracle tox env to
``{envdir}/native``), else ``<sys.prefix>/native``, else ``/work/.native``.
``native_available()`` says whether they are found; ``native_dir()`` raises a
RuntimeError naming what to run when they are not.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

MMDET3_FILE = 'mmdet/models/layers/ema.py'
MMYOLO_FILE = 'mmyolo/models/layers/ema.py'
_MISSING = object()


def _candidates():
    env = os.environ.get('COMPAT_EMA_NATIVE_DIR')
    if env:
        return [Path(env)]
    return [Path(sys.prefix) / 'native', Path('/work/.native')]


def _find_dir() -> Optional[Path]:
    for d in _candidates():
        if (d / MMDET3_FILE).is_file() and (d / MMYOLO_FILE).is_file():
            return d
    return None


def native_available() -> bool:
    """True when both upstream files are found and the real mmengine 0.10.7 imports."""
    if _find_dir() is None:
        return False
    try:
        import mmengine
    except ImportError:
        return False
    return mmengine.__version__ == '0.10.7'


def native_dir() -> Path:
    """The directory holding the two extracted files, or a RuntimeError saying how to get them."""
    found = _find_dir()
    if found is None:
        raise RuntimeError(
            f'the mmdet 3.3.0 / mmyolo 0.6.0 ema.py files were not found in '
            f'{[str(c) for c in _candidates()]}: run `pip download --no-deps -d WHEELS '
            f'mmdet==3.3.0 mmyolo==0.6.0 && python tests/oracle/extract_native.py WHEELS DIR` '
            f'and set COMPAT_EMA_NATIVE_DIR=DIR (tox -e oracle does this)')
    return found


def _package(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so submodule imports resolve through sys.modules
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def _exec_with_shim(module_name: str, path: Path, shim: Dict[str, types.ModuleType]):
    saved = {k: sys.modules.get(k, _MISSING) for k in shim}
    sys.modules.update(shim)
    try:
        spec = importlib.util.spec_from_file_location(module_name, str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is _MISSING:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def _registry(scope: str):
    from mmengine.registry import MODELS, Registry
    return Registry('model', parent=MODELS, scope=scope)


@lru_cache(maxsize=None)
def mmdet3_module():
    """The executed mmdet 3.3.0 ``mmdet/models/layers/ema.py`` (module ``native_mmdet3_ema``)."""
    registry = _registry('native_mmdet3')
    shim = {'mmdet': _package('mmdet'),
            'mmdet.registry': _package('mmdet.registry', MODELS=registry)}
    module = _exec_with_shim('native_mmdet3_ema', native_dir() / MMDET3_FILE, shim)
    module.REGISTRY = registry
    return module


@lru_cache(maxsize=None)
def mmyolo_module():
    """The executed mmyolo 0.6.0 ``mmyolo/models/layers/ema.py`` (module ``native_mmyolo_ema``)."""
    base = mmdet3_module().ExpMomentumEMA
    registry = _registry('native_mmyolo')
    shim = {'mmdet': _package('mmdet'),
            'mmdet.models': _package('mmdet.models'),
            'mmdet.models.layers': _package('mmdet.models.layers', ExpMomentumEMA=base),
            'mmyolo': _package('mmyolo'),
            'mmyolo.registry': _package('mmyolo.registry', MODELS=registry)}
    module = _exec_with_shim('native_mmyolo_ema', native_dir() / MMYOLO_FILE, shim)
    module.REGISTRY = registry
    return module


def mmdet3_cls():
    """The real mmdet 3.3.0 ``ExpMomentumEMA`` class."""
    return mmdet3_module().ExpMomentumEMA


def mmyolo_cls():
    """The real mmyolo 0.6.0 ``ExpMomentumEMA`` class."""
    return mmyolo_module().ExpMomentumEMA
