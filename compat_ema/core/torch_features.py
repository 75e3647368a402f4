"""What the running torch can do: one probe per feature newer than torch 1.8.

compat_ema supports torch >= 1.8 (what mmcv 1.6 / mmdet 2.x projects ran). Every
feature a later torch added is probed here, once, by presence or by behaviour
(never by version number alone), and each call site takes a fallback that gives
the same bits, or refuses by name. The probes and what they guard:

======================  ==========  =====================================================
probe                   torch       used by / fallback
======================  ==========  =====================================================
LOAD_WEIGHTS_ONLY       >= 1.13     golden and checkpoint reading: compat_ema's own
                                    restricted unpickler (also runs no pickled code)
LOAD_MMAP               >= 2.1      ``compat-ema inspect --mmap``: a plain load
weights_only_reads_     >= 2.0      ``load_weights_only`` (goldens, trusted reads): torch 1.13's
floats                              weights-only unpickler refuses Python floats, so the
                                    restricted unpickler (torch's allowlist) reads there
LOAD_HONOURS_PICKLE     >= 2.0      safe loader: torch 1.13 (only) replaces a custom
_MODULE                             ``pickle_module`` by ``pickle``; the restricted module is
                                    then handed to torch's internal readers
UNTYPED_STORAGE         >= 2.0      storage addresses/sizes: ``Tensor.storage()``
STORAGE_USE_COUNT       >= 2.0      storage exchange and flat buffers (speed only): without
                                    it nothing is provably exclusive, upstream's copies run
FOREACH_LERP            >= 2.0      mmengine lerp_ fast path: the per-tensor ``lerp_`` loop
FOREACH_COPY            >= 2.1      batched copies/swaps: per-tensor ``copy_``
is_cpu                  > 1.10      ``Tensor.is_cpu``: ``t.device.type == 'cpu'``
get_submodule           >= 1.9      ``Module.get_submodule``: the same ``getattr`` walk
save_byte_stable        >= 1.9      ``torch.save`` names storage records 0, 1, ...; torch 1.8
                                    names them after memory addresses, so a golden file written
                                    there has stable content but not stable bytes
lerp_implemented        varies      ``Tensor.lerp_`` on CPU: no bfloat16 in torch 1.8-1.12, no
                                    float16 in 1.13; mmengine's EMA raises there as upstream does
bits_view               > 1.10      ``Tensor.view(dtype)`` to another element size (bitwise
                                    compares, digests): a same-size integer view
======================  ==========  =====================================================

The foreach kernels used for the mmcv/mmdet update (``_foreach_mul_``,
``_foreach_add_`` with ``alpha``, ``_foreach_sub``) exist from torch 1.7 on, and
call the same per-element CPU kernels as ``mul_``/``add_``; the fast path's
goldens run on every torch of the tox matrix (both kernels, bitwise).
"""
from __future__ import annotations

import functools
import inspect
import io
import operator
import pickle
import types
from typing import Any, List

import torch

__all__ = ['LOAD_WEIGHTS_ONLY', 'LOAD_MMAP', 'UNTYPED_STORAGE', 'STORAGE_USE_COUNT',
           'FOREACH_LERP', 'FOREACH_COPY', 'load_honours_pickle_module', 'weights_only_reads_floats',
           'storage_of',
           'storage_nbytes', 'is_cpu', 'bits_view', 'lerp_implemented', 'get_submodule',
           'save_byte_stable', 'describe']


def _load_parameters() -> frozenset:
    try:
        return frozenset(inspect.signature(torch.load).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a C-level torch.load
        return frozenset()


_LOAD_PARAMETERS = _load_parameters()
#: ``torch.load(weights_only=...)`` exists (torch >= 1.13)
LOAD_WEIGHTS_ONLY = 'weights_only' in _LOAD_PARAMETERS
#: ``torch.load(mmap=...)`` exists (torch >= 2.1)
LOAD_MMAP = 'mmap' in _LOAD_PARAMETERS
#: ``Tensor.untyped_storage()`` exists (torch >= 2.0); before it ``Tensor.storage()``
UNTYPED_STORAGE = hasattr(torch.Tensor, 'untyped_storage')
#: ``torch._C._storage_Use_Count`` (torch >= 2.0), or None
STORAGE_USE_COUNT = getattr(torch._C, '_storage_Use_Count', None)
#: ``torch._foreach_lerp_`` (torch >= 2.0)
FOREACH_LERP = hasattr(torch, '_foreach_lerp_')
#: ``torch._foreach_copy_`` (torch >= 2.1)
FOREACH_COPY = hasattr(torch, '_foreach_copy_')


def _is_cpu_by_device(t: torch.Tensor) -> bool:
    return t.device.type == 'cpu'


#: ``is_cpu(t)``: ``t.is_cpu`` (a C attribute; not in torch 1.8-1.10) or ``t.device.type == 'cpu'``
is_cpu = operator.attrgetter('is_cpu') if hasattr(torch.Tensor, 'is_cpu') else _is_cpu_by_device

_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits_view(t: torch.Tensor) -> torch.Tensor:
    """``t``'s bits as an integer tensor of the same shape and element size (a float or
    complex tensor is reinterpreted, an integer or bool one returned as it is): two tensors
    of one dtype are bitwise equal exactly when their views are ``torch.equal``, and the
    view's bytes are ``t``'s bytes. Works on torch 1.8 (which cannot view a tensor as a
    dtype of another element size)."""
    if t.dtype.is_complex:
        t = torch.view_as_real(t)
    if not t.dtype.is_floating_point:
        return t
    return t.view(_SAME_SIZE_INT[t.element_size()])


def storage_of(t: torch.Tensor):
    """``t.untyped_storage()``, or ``t.storage()`` where torch has no untyped storage
    (same ``data_ptr()`` and bytes: the typed storage of torch < 2.0 counts elements
    in ``size()``, so use :func:`storage_nbytes` for sizes)."""
    return t.untyped_storage() if UNTYPED_STORAGE else t.storage()


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s whole storage, on every torch."""
    if UNTYPED_STORAGE:
        return t.untyped_storage().nbytes()
    st = t.storage()
    return st.size() * st.element_size()


@functools.lru_cache(maxsize=None)
def load_honours_pickle_module() -> bool:
    """Whether ``torch.load(..., pickle_module=m)`` unpickles with ``m`` (a behaviour
    probe: torch 1.13 drops it when ``weights_only=False``). Saves and loads one
    small tensor in memory; cached."""
    used = []

    class _Probe(pickle.Unpickler):
        def find_class(self, module, name):
            used.append(name)
            return super().find_class(module, name)

    probe: Any = types.ModuleType('compat_ema_probe_pickle')
    probe.Unpickler = _Probe
    probe.load = lambda f, **kw: _Probe(f, **kw).load()
    probe.UnpicklingError = pickle.UnpicklingError
    buf = io.BytesIO()
    torch.save({'t': torch.zeros(1)}, buf)
    buf.seek(0)
    kwargs = {'weights_only': False} if LOAD_WEIGHTS_ONLY else {}
    try:
        torch.load(buf, map_location='cpu', pickle_module=probe, **kwargs)
    except Exception:  # pragma: no cover - then the internal readers are used
        return False
    return bool(used)


@functools.lru_cache(maxsize=None)
def weights_only_reads_floats() -> bool:
    """Whether torch's weights-only unpickler reads a Python float (a behaviour probe: torch
    1.13's has no ``BINFLOAT`` opcode, "Unsupported operand 71", so any checkpoint holding
    an optimizer ``lr`` or a float in ``meta`` fails there). False where torch has no
    weights-only loading at all. Saves and loads one float in memory; cached."""
    if not LOAD_WEIGHTS_ONLY:
        return False
    buf = io.BytesIO()
    torch.save({'lr': 0.5}, buf)
    buf.seek(0)
    try:
        return torch.load(buf, map_location='cpu', weights_only=True) == {'lr': 0.5}
    except Exception:  # noqa: BLE001 - torch 1.13 raises UnpicklingError
        return False


@functools.lru_cache(maxsize=None)
def lerp_implemented(dtype: torch.dtype, device: str = 'cpu') -> bool:
    """Whether ``Tensor.lerp_(other, float)`` runs for ``dtype`` on ``device`` (a behaviour
    probe on two elements; cached). Where it does not, the real mmengine
    ``ExponentialMovingAverage`` raises torch's ``RuntimeError`` ("... not implemented
    for 'BFloat16'") on its first update, and so does compat_ema's twin: same error, same
    call, nothing to fall back to without changing upstream's numbers."""
    try:
        torch.zeros(2, dtype=dtype, device=device).lerp_(
            torch.ones(2, dtype=dtype, device=device), 0.5)
    except RuntimeError:
        return False
    return True


def get_submodule(module: torch.nn.Module, target: str) -> torch.nn.Module:
    """``module.get_submodule(target)`` (torch >= 1.9), or the same walk by ``getattr``
    through ``'a.b.c'``: ``AttributeError`` for a missing or non-module step."""
    if hasattr(module, 'get_submodule'):
        return module.get_submodule(target)
    mod = module
    for item in target.split('.') if target else ():
        mod = getattr(mod, item)   # AttributeError names the missing step
        if not isinstance(mod, torch.nn.Module):
            raise AttributeError(f'`{item}` is not an nn.Module')
    return mod


@functools.lru_cache(maxsize=None)
def save_byte_stable() -> bool:
    """Whether ``torch.save`` writes the same bytes for the same content held in other
    memory (torch >= 1.9; torch 1.8 names each storage record after its address)."""
    blobs: List[bytes] = []
    alive: List[torch.Tensor] = []   # earlier tensors stay alive: each save sees a new address
    for _ in range(2):
        alive.append(torch.zeros(3))
        buf = io.BytesIO()
        torch.save({'t': alive[-1]}, buf)
        blobs.append(buf.getvalue())
    return blobs[0] == blobs[1]


def describe() -> dict:
    """Every probe's answer (``compat-ema doctor`` and bug reports)."""
    return {'torch': torch.__version__, 'load_weights_only': LOAD_WEIGHTS_ONLY,
            'load_mmap': LOAD_MMAP, 'load_honours_pickle_module': load_honours_pickle_module(),
            'weights_only_reads_floats': weights_only_reads_floats(),
            'untyped_storage': UNTYPED_STORAGE,
            'storage_use_count': STORAGE_USE_COUNT is not None,
            'foreach_lerp': FOREACH_LERP, 'foreach_copy': FOREACH_COPY,
            'cpu_lerp_bfloat16': lerp_implemented(torch.bfloat16),
            'cpu_lerp_float16': lerp_implemented(torch.float16),
            'is_cpu_attribute': hasattr(torch.Tensor, 'is_cpu'),
            'save_byte_stable': save_byte_stable()}
