"""Where a golden was recorded and where it is checked: environment fingerprints and kernel classes.

A golden pins *EMA behaviour*; the machine only decides how the last bit of an
elementwise update rounds. This module names what the machine contributes:

* :func:`fingerprint`: torch version and build, Python, CPU model and flags, the
  ATen CPU capability torch reports and the one it can really run, BLAS and its
  instruction set where detectable (``MKL_ENABLE_INSTRUCTIONS``), thread counts,
  and the CUDA device when one is used. Every golden file written by compat_ema
  (and by ``reference/``'s generators) carries one in its meta under
  ``environment``.
* :func:`kernel_class`: the class of elementwise kernels the EMA arithmetic runs
  on, e.g. ``cpu-x86_64-AVX2`` (vectorised, fused multiply-add),
  ``cpu-x86_64-DEFAULT`` (torch's scalar kernels, ``ATEN_CPU_CAPABILITY=default``,
  what a CPU without AVX2 runs), ``cpu-aarch64-DEFAULT`` (NEON), ``cuda-sm90``.
  ``mul_``, ``add_(x, alpha=)``, ``lerp_`` and the SWA formula give bitwise equal
  results within a class and may differ by rounding between classes; goldens are
  recorded per class (see docs/golden-tests.md).
* :func:`training_key`: the fields that decide *training* numerics (GEMM kernels
  of forward/backward, thread count); values derived from training compare
  bitwise only where this key is the recording's.
* :func:`describe` / :func:`environment_note`: one-line descriptions for reports
  ("recorded on X, running on Y").
"""
from __future__ import annotations

import os
import platform
import re
from typing import Any, Dict, List, Mapping, Optional

import torch

__all__ = ['fingerprint', 'kernel_class', 'training_key', 'describe', 'environment_note',
           'EQUIVALENT_CLASSES', 'cpu_model', 'effective_capability',
           'producible_capabilities']

#: kernel classes that run the same elementwise arithmetic as another class, with the evidence.
#: ``AVX512``: torch's AVX-512 and AVX2 kernels of ``mul_``, ``add_(alpha=)``, ``lerp_`` and the
#: SWA ``add_``/``div`` are the same ``Vectorized<T>`` templates (fused multiply-add in both,
#: wider registers only; no reduction is involved), and the scalar tail of a vectorised loop is
#: the same FMA-compiled operation in both builds; measured: the goldens recorded with AVX2
#: kernels replay bitwise on an AVX-512 Xeon (compat_ema issue 14; docs/golden-tests.md).
EQUIVALENT_CLASSES: Dict[str, str] = {'cpu-x86_64-AVX512': 'cpu-x86_64-AVX2'}


def _cpuinfo() -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                key, sep, value = line.partition(':')
                if sep and key.strip() in ('model name', 'flags', 'Features', 'CPU implementer',
                                           'CPU part') and key.strip() not in out:
                    out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    info = _cpuinfo()
    return info.get('model name') or platform.processor() or platform.machine() or 'unknown'


def _cpu_flags() -> set:
    info = _cpuinfo()
    return set((info.get('flags') or info.get('Features') or '').split())


def effective_capability() -> str:
    """The ATen CPU capability whose kernels really run: torch's own answer, capped by the CPU.

    ``ATEN_CPU_CAPABILITY=avx512`` on a CPU without AVX-512 makes torch *report* AVX512 while
    its dispatcher runs the AVX2 kernels (measured on torch 2.13.0); the CPU flags decide.
    """
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
        # the scalar kernels' name: 'DEFAULT' in most releases, 'NO AVX' in some (torch 2.6)
        cap = 'DEFAULT' if cap == 'NO AVX' else cap
    except (AttributeError, RuntimeError):  # torch < 2.0
        cap = 'AVX2' if 'avx2' in torch.__config__.show().lower() else 'DEFAULT'
        env = os.environ.get('ATEN_CPU_CAPABILITY', '').upper()
        cap = env if env in ('DEFAULT', 'AVX2', 'AVX512') else cap
    flags = _cpu_flags()
    if platform.machine() in ('x86_64', 'AMD64') and flags:
        if cap.startswith('AVX512') and 'avx512f' not in flags:
            cap = 'AVX2'
        if cap.startswith('AVX2') and not {'avx2', 'fma'} <= flags:
            cap = 'DEFAULT'
    return cap


def producible_capabilities() -> List[str]:
    """The ``ATEN_CPU_CAPABILITY`` values this CPU can run, FMA classes first. Never ask for
    more: torch 2.13 runs some AVX-512 kernels when told to even on a CPU without AVX-512
    (measured: a GRU dies with SIGILL under ``ATEN_CPU_CAPABILITY=avx512`` on an AVX2 CPU)."""
    if _arch() != 'x86_64':
        return ['default']
    flags = _cpu_flags()
    return ([c for c, need in (('avx2', {'avx2', 'fma'}), ('avx512', {'avx512f', 'avx512bw',
                                                                     'avx512vl', 'avx512dq'}))
             if need <= flags] + ['default'])


def _arch() -> str:
    m = platform.machine().lower()
    return {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(m, m or 'unknown')


def kernel_class(device: Any = 'cpu') -> str:
    """The elementwise-kernel class EMA arithmetic runs on here (see module doc)."""
    dev = torch.device(device)
    if dev.type == 'cuda':
        major, minor = torch.cuda.get_device_capability(dev)
        return f'cuda-sm{major}{minor}'
    if dev.type != 'cpu':
        return f'{dev.type}-{_arch()}'
    return f'cpu-{_arch()}-{effective_capability()}'


def _blas() -> Dict[str, Optional[str]]:
    cfg = torch.__config__.show()
    info = re.search(r'BLAS_INFO=(\w+)', cfg)
    mkl = re.search(r'Math Kernel Library Version ([\w.\-]+)', cfg)
    name = info.group(1) if info else ('mkl' if mkl else 'unknown')
    isa = None
    if name == 'mkl':
        env = os.environ.get('MKL_ENABLE_INSTRUCTIONS')
        flags = _cpu_flags()
        best = ('AVX512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags
                else 'SSE4_2' if 'sse4_2' in flags else None)
        order = ['SSE4_2', 'AVX', 'AVX2', 'AVX512', 'AVX512_E1', 'AVX512_E4', 'AVX10']
        isa = best
        if env:
            isa = env.upper()
            if best in order and isa in order and order.index(isa) > order.index(best):
                isa = best
    return {'name': name, 'version': mkl.group(1) if mkl else None, 'isa': isa}


def fingerprint(device: Any = 'cpu') -> Dict[str, Any]:
    """A JSON-ready description of what decides numerics here (see module doc)."""
    dev = torch.device(device)
    fp: Dict[str, Any] = {
        'torch': torch.__version__,
        'torch_git': getattr(torch.version, 'git_version', None),
        'python': platform.python_version(),
        'machine': _arch(),
        'cpu_model': cpu_model(),
        'cpu_capability': effective_capability(),
        'kernel_class': kernel_class(dev),
        'blas': _blas(),
        'threads': torch.get_num_threads(),
        'env': {k: os.environ[k] for k in ('ATEN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS',
                                           'OMP_NUM_THREADS', 'MKL_NUM_THREADS')
                if k in os.environ},
        'cuda': None,
    }
    if dev.type == 'cuda':
        major, minor = torch.cuda.get_device_capability(dev)
        fp['cuda'] = {'device': torch.cuda.get_device_name(dev), 'capability': f'{major}.{minor}',
                      'cuda': torch.version.cuda}
    return fp


def training_key(fp: Mapping[str, Any]) -> tuple:
    """The fingerprint fields that decide training numerics (forward/backward/optimizer)."""
    blas = fp.get('blas') or {}
    return (str(fp.get('torch', '')).split('+')[0], fp.get('machine'), fp.get('cpu_model'),
            fp.get('cpu_capability'), blas.get('name'), blas.get('isa'), fp.get('threads'),
            (fp.get('cuda') or {}).get('device'))


def describe(fp: Optional[Mapping[str, Any]]) -> str:
    """``torch 2.13.0+cpu, AMD EPYC, kernels cpu-x86_64-AVX2, BLAS mkl/AVX2, 2 threads``."""
    if not fp:
        return 'an unrecorded environment'
    blas = fp.get('blas') or {}
    cuda = fp.get('cuda') or {}
    where = f"{cuda.get('device')} (sm {cuda.get('capability')})" if cuda else fp.get('cpu_model')
    return (f"torch {fp.get('torch')}, {where}, kernels {fp.get('kernel_class')}, BLAS "
            f"{blas.get('name')}/{blas.get('isa')}, {fp.get('threads')} thread(s)")


def environment_note(recorded: Optional[Mapping[str, Any]], running: Mapping[str, Any]) -> str:
    """``recorded on X, running on Y`` with the fields that differ."""
    rec = dict(recorded or {})
    fields = [k for k in ('torch', 'cpu_model', 'kernel_class', 'blas', 'threads', 'cuda')
              if rec.get(k) != running.get(k)]
    return (f'recorded on {describe(recorded)}; running on {describe(running)}'
            + (f" (differs in: {', '.join(fields)})" if fields else ''))
