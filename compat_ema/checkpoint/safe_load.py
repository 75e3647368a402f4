"""Load OpenMMLab checkpoints without running pickled code.

Reproduces what ``torch.load`` returns for mmcv 1.x / mmdet 2.x / mmengine 0.x
checkpoints, with a restricted unpickler instead of a full one. torch 2.6+
already defaults to ``weights_only=True``, and under it the real mmengine 0.10.7
cannot load its own files (``message_hub`` holds ``HistoryBuffer`` objects and
numpy arrays/scalars). Here those references are mapped to inert stand-ins
(:class:`Opaque` subclasses that only record their constructor arguments and
pickled state); compat_ema never imports mmengine or numpy for it.

Anything else outside the allowlist (torch's own weights-only allowlist plus the
OpenMMLab entries below) is refused with :class:`UnsafeCheckpointError` before
it is called; with ``opaque=True`` (used by ``inspect``) it becomes an inert
placeholder instead and is reported. A full unpickle happens only with
``trust=True``.

How: ``torch.load(pickle_module=<restricted module>, weights_only=False)``,
whose ``Unpickler.find_class`` is the only way a pickle can reach a callable.
This works the same on torch 1.8 to 2.13 (``torch.serialization.safe_globals``
exists only on newer torch and cannot return placeholders for unknown names).
When ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set, torch refuses custom unpicklers;
torch's own weights-only loader is used then (mmengine files are refused).
"""
from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import re
import tarfile
import types
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..core import torch_features as _features
from .errors import CheckpointError, UnsafeCheckpointError

__all__ = ['Opaque', 'load', 'load_weights_only', 'detect_serialization', 'LEGACY_MAGIC']

#: the pickled magic number that starts torch's pre-1.6 (non-zip) serialization
LEGACY_MAGIC = b'\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19'

#: references legitimately found in mmengine checkpoints (message_hub), mapped to stand-ins
OPENMMLAB_STANDINS = (
    'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar',
    'numpy.ndarray', 'numpy.dtype',
)


class Opaque:
    """Inert stand-in for a pickled object of a class compat_ema does not import.

    ``upstream`` is the ``module.name`` the file referenced; ``args`` the
    constructor/reduce arguments, ``state`` the pickled state. Never calls
    anything; refuses to be pickled again (so it cannot leak into an output).
    """

    upstream = '?'
    args: Tuple[Any, ...]
    state: Any
    allowlisted = False   # True: a legitimate OpenMMLab reference, read inertly

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__['args'] = args
        obj.__dict__['state'] = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__['state'] = state

    def __reduce_ex__(self, protocol):
        raise TypeError(f'{self.upstream} placeholder cannot be saved: it stands for an object '
                        'compat_ema did not unpickle')

    def __repr__(self):
        return f'<opaque {self.upstream}>'


class _Attr(Opaque):
    """Stand-in for ``getattr(<stand-in class>, name)`` (HistoryBuffer's statistics methods)."""

    allowlisted = True


def _safe_getattr(obj, name):
    if isinstance(obj, type) and issubclass(obj, Opaque) and isinstance(name, str):
        attr = _Attr(obj.upstream, name)
        attr.__dict__['upstream'] = f'{obj.upstream}.{name}'
        attr.__dict__['allowlisted'] = obj.allowlisted
        return attr
    raise UnsafeCheckpointError(f'refused getattr({obj!r}, {name!r}): only attributes of '
                                'allowlisted stand-in classes may be referenced')


_STANDIN_CACHE: Dict[str, type] = {}


def _standin(full_name: str) -> type:
    cls = _STANDIN_CACHE.get(full_name)
    if cls is None:
        cls = type(full_name.rsplit('.', 1)[-1], (Opaque,),
                   {'upstream': full_name, 'allowlisted': full_name in OPENMMLAB_STANDINS})
        _STANDIN_CACHE[full_name] = cls
    return cls


def _torch_allowlist() -> Dict[str, Any]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = dict(_get_allowed_globals())
    except Exception:  # torch < 1.13 has no weights-only unpickler: the same list by hand
        allowed = _legacy_torch_allowlist()
    allowed.setdefault('collections.OrderedDict', __import__('collections').OrderedDict)
    allowed.setdefault('torch._utils._rebuild_tensor_v2', torch._utils._rebuild_tensor_v2)
    allowed.setdefault('torch._utils._rebuild_parameter', torch._utils._rebuild_parameter)
    allowed.setdefault('torch.Size', torch.Size)
    allowed.setdefault('torch.device', torch.device)
    allowed.setdefault('_codecs.encode', __import__('codecs').encode)
    for t in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        allowed.setdefault(str(t), t)
    allowed['builtins.frozenset'] = frozenset
    allowed['builtins.getattr'] = _safe_getattr
    return allowed


def _legacy_torch_allowlist() -> Dict[str, Any]:
    """What torch 1.13's weights-only unpickler allows, for torch 1.8-1.12: the tensor
    and storage classes, dtypes, and the tensor/parameter rebuild functions that exist."""
    allowed: Dict[str, Any] = {}
    for cls in list(getattr(torch, '_storage_classes', ())) + list(torch._tensor_classes):
        allowed[f'{cls.__module__}.{cls.__name__}'] = cls
    for name in dir(torch):
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            allowed[str(obj)] = obj
    for name in ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_parameter',
                 '_rebuild_parameter_with_state', '_rebuild_qtensor', '_rebuild_sparse_tensor'):
        if hasattr(torch._utils, name):
            allowed[f'torch._utils.{name}'] = getattr(torch._utils, name)
    for name in ('per_tensor_affine', 'per_tensor_symmetric', 'per_channel_affine',
                 'per_channel_symmetric', 'per_channel_affine_float_qparams'):
        if hasattr(torch, name):
            allowed[f'torch.{name}'] = getattr(torch, name)
    allowed['torch.nn.parameter.Parameter'] = torch.nn.Parameter
    allowed['builtins.set'] = set
    allowed['builtins.bytearray'] = bytearray
    allowed['builtins.complex'] = complex
    allowed['collections.Counter'] = __import__('collections').Counter
    return allowed


def _make_pickle_module(opaque: bool, refused: List[str], standins: bool = True
                        ) -> types.ModuleType:
    allowed = _torch_allowlist()

    class RestrictedUnpickler(pickle.Unpickler):
        """``pickle.Unpickler`` whose ``find_class`` only hands out allowlisted objects."""

        def find_class(self, module, name):
            # protocol-2 files name Python 2 modules (``__builtin__``); map them as pickle does
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            full = f'{module}.{name}'
            if full in allowed:
                return allowed[full]
            if standins and full in OPENMMLAB_STANDINS:
                return _standin(full)
            refused.append(full)
            if opaque:
                return _standin(full)
            raise UnsafeCheckpointError(
                f'refused to load {full}: it is not on the allowlist of what OpenMMLab '
                'checkpoints contain (nothing was executed); pass trust=True / --trust only '
                'if you trust this file', refused=[full])

    mod = types.ModuleType('compat_ema_restricted_pickle')
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    mod.loads = lambda b, **kw: RestrictedUnpickler(io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    mod.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return mod


#: torch 1.13's ``torch.load`` replaces any ``pickle_module`` by ``pickle`` when
#: ``weights_only=False`` (``else: pickle_module = pickle``; fixed in 2.0), which would
#: unpickle everything: where the probe finds that, the restricted module is handed to
#: torch's own readers (torch 1.8-1.12 honour it; the readers take it on all of them).


def _load_with_module(path: Path, fmt: str, module: types.ModuleType, kwargs: Dict[str, Any]
                      ) -> Any:
    """``torch.load(path, pickle_module=module)`` through torch's internal readers (1.x)."""
    from torch import serialization as ser
    map_location = kwargs.get('map_location')
    with open(path, 'rb') as f:
        if fmt == 'zip':
            with ser._open_zipfile_reader(f) as zf:
                return ser._load(zf, map_location, module, encoding='utf-8')
        return ser._legacy_load(f, map_location, module, encoding='utf-8')


def detect_serialization(path) -> str:
    """Name the torch serialization format of ``path`` (no unpickling).

    Returns ``'zip'`` (torch >= 1.6 default), ``'legacy'`` (the pre-1.6 pickle
    stream with the magic number) or ``'legacy-tar'`` (torch < 0.4). Raises
    :class:`CheckpointError` for an empty, truncated or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path}: no such file')
    if path.is_dir():
        raise CheckpointError(f'{path}: is a directory, not a checkpoint file')
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f'{path}: empty file (0 bytes), not a checkpoint')
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith((b'PK\x03\x04', b'PK\x05\x06')):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception as exc:  # BadZipFile, OSError, bad names, unsupported versions
            raise CheckpointError(f'{path}: truncated or corrupt zip archive ({exc})') from None
        if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
            raise CheckpointError(f'{path}: a zip archive but not a torch checkpoint '
                                  '(no data.pkl record)')
        return 'zip'
    if head == LEGACY_MAGIC:
        return 'legacy'
    try:
        if tarfile.is_tarfile(path):
            return 'legacy-tar'
    except OSError:
        pass
    if head[:1] == b'\x80':
        raise CheckpointError(f'{path}: a bare pickle, not a torch checkpoint (no torch magic '
                              'number); refusing to unpickle it')
    raise CheckpointError(f'{path}: not a torch checkpoint (starts with {head[:8]!r})')


def load(path, trust: bool = False, map_location='cpu', opaque: bool = False,
         mmap: bool = False, _refused: Optional[List[str]] = None) -> Any:
    """Load a checkpoint file, safely by default.

    Stands in for ``torch.load(path)`` as mmcv ``load_checkpoint`` /
    mmengine ``_load_checkpoint`` call it. ``trust=False`` (default): restricted
    unpickling, unknown references refused (:class:`UnsafeCheckpointError`), or
    turned into :class:`Opaque` placeholders with ``opaque=True``.
    ``trust=True``: a full ``torch.load(weights_only=False)``.
    """
    path = Path(path)
    fmt = detect_serialization(path)
    kwargs: Dict[str, Any] = dict(map_location=map_location)
    if mmap and fmt == 'zip' and _features.LOAD_MMAP:  # torch < 2.1: a plain load
        kwargs['mmap'] = True
    refused: List[str] = [] if _refused is None else _refused
    try:
        if _forced_weights_only():
            # torch then refuses any pickle_module: use its own weights-only loader (mmcv files
            # load; mmengine's HistoryBuffer is refused, with the message below)
            return torch.load(str(path), weights_only=True, **kwargs)
        if _features.LOAD_WEIGHTS_ONLY:
            kwargs['weights_only'] = False
        if trust:
            return torch.load(str(path), **kwargs)
        module = _make_pickle_module(opaque, refused)
        if not _features.load_honours_pickle_module():
            return _load_with_module(path, fmt, module, kwargs)
        return torch.load(str(path), pickle_module=module, **kwargs)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f'{path}: {exc}', exc.refused) from None
    except CheckpointError:
        raise
    except Exception as exc:  # whatever a corrupt stream makes torch or pickle raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _forced_weights_only() and 'weights only' in str(exc).lower():
            found = re.search(r'(?:GLOBAL|[Cc]lass|global:?) ([A-Za-z_][\w.]*\.\w+)', str(exc))
            flat = ' '.join(str(exc).split())
            what = f'refused {found.group(1)}' if found else f'refused it ({flat[:300]})'
            raise UnsafeCheckpointError(
                f'{path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, so torch\'s own weights-only '
                f'loader was used and {what}; unset it to use compat_ema\'s restricted loader '
                '(also safe; it reads mmengine\'s HistoryBuffer inertly)',
                [found.group(1)] if found else []) from None
        raise CheckpointError(f'{path}: truncated or corrupt {fmt} checkpoint '
                              f'({type(exc).__name__}: {msg})') from None


def load_weights_only(path, map_location='cpu') -> Any:  # path: a path or a binary file
    """``torch.load(path, weights_only=True)`` on every torch: torch's own weights-only
    unpickler where it has one that reads Python floats (torch >= 2.0), else compat_ema's
    restricted one with torch's allowlist and nothing else (no OpenMMLab stand-ins): on
    torch < 1.13, which has no weights-only loading, and on torch 1.13, whose weights-only
    unpickler refuses any float (an optimizer ``lr``, a ``meta`` entry). Anything outside
    the allowlist raises :class:`UnsafeCheckpointError` before it is called; torch's own
    errors pass through."""
    source = path if hasattr(path, 'read') else str(path)   # a path or an open binary file
    if _features.weights_only_reads_floats():
        return torch.load(source, map_location=map_location, weights_only=True)
    module = _make_pickle_module(False, [], standins=False)
    if not _features.load_honours_pickle_module():  # torch 1.13
        return _load_with_module(Path(path), detect_serialization(path), module,
                                 {'map_location': map_location})
    return torch.load(source, map_location=map_location, pickle_module=module)


def opaque_objects(obj: Any, _path: str = '', _seen=None) -> List[Tuple[str, str, bool]]:
    """List ``(where, upstream name, allowlisted)`` for every :class:`Opaque` inside ``obj``."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    out: List[Tuple[str, str, bool]] = []
    if isinstance(obj, Opaque):
        out.append((_path or '<root>', obj.upstream, obj.allowlisted))
        for i, a in enumerate(obj.args):
            out += opaque_objects(a, f'{_path}.args[{i}]', seen)
        out += opaque_objects(obj.state, f'{_path}.state', seen)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += opaque_objects(v, f'{_path}.{k}' if _path else str(k), seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += opaque_objects(v, f'{_path}[{i}]', seen)
    return out


def _forced_weights_only() -> bool:
    """torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD switch (torch >= 2.4 honours it over arguments;
    torch < 1.13 has no weights-only loading and ignores it)."""
    return _features.LOAD_WEIGHTS_ONLY and os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes',
                                                                          'true')
