"""The project's tolerance policy: how far a golden may be from a replay, per torch build,
device and kernel class (MIGRATION.md, "Tolerance policy"; docs/golden-tests.md).

Bitwise where the golden was recorded for the running kernel class
(:func:`compat_ema.testing.environment.kernel_class`); the rows of
:data:`TOLERANCE_TABLE` for other torch builds and devices; and
:data:`UNRECORDED_CLASS` for a kernel class no golden file was recorded on
(ARM, other GPUs): a measured per-update bound.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

import torch

Number = Union[int, float]
TolSpec = Union[Number, Mapping[Any, Number]]

@dataclass(frozen=True)
class Tolerance:
    """A row of the tolerance policy: ULP bound (a number, or per dtype name with a
    ``'default'``), absolute bound per dtype name, and why."""

    ulp: TolSpec
    atol: Mapping[str, float]
    reason: str


# Values of the golden cases lie in [-2, 2]; an absolute bound of ulp * eps(dtype) covers the
# elements where a rounding difference meets cancellation near zero (where ULPs are tiny).
_UNMEASURED_ULP = 16
_UNMEASURED_ATOL = {name: _UNMEASURED_ULP * torch.finfo(dt).eps for name, dt in
                    (('float64', torch.float64), ('float32', torch.float32),
                     ('bfloat16', torch.bfloat16), ('float16', torch.float16))}

#: the torch 1.x builds of the tox matrix, measured alike (MIGRATION.md, "Every env of the tox matrix")
_TORCH1X = Tolerance({'default': 0, 'bfloat16': 2}, {'bfloat16': 2 ** -11},
                     'measured on 1.8.1+cu102, 1.10.2+cu102 (Python 3.8) and 1.12.1+cu102 (Python '
                     '3.9), the CPU: float32/float64 bitwise (all cases, foreach and faithful '
                     'kernels); bfloat16 mul_/add_ as on 1.13.1 (2 ULP against the 2.x recording, '
                     'bitwise against the 1.x ones); no CPU bfloat16 lerp_ before 1.13, so '
                     'mmengine bfloat16 raises as upstream does')

#: (torch version pattern, device type, Tolerance): the first matching row applies.
TOLERANCE_TABLE: Tuple[Tuple[str, str, Tolerance], ...] = (
    ('2.13.0+cpu', 'cpu', Tolerance(0, {}, 'measured: bitwise (the recording build; '
                                           'foreach and faithful kernels alike)')),
    ('2.6.0+cu124', 'cpu', Tolerance(0, {}, 'measured: bitwise on the CPU (all cases, foreach '
                                            'and faithful kernels)')),
    ('1.13.1+cu117', 'cpu', Tolerance({'default': 0, 'bfloat16': 2}, {'bfloat16': 2 ** -11},
                                      'measured: bitwise except bfloat16 mul_/add_ updates: '
                                      'max 2 ULP on the mmcv/mmdet 2.x trajectories; on the '
                                      'mmdet 3.x native bf16 cases up to 16 ULP near zero, all '
                                      'within abs 3.7e-4 < 2**-11; torch 1.13 rounds the scalar '
                                      'of a bfloat16 mul_(scalar) to bfloat16 first, 2.x '
                                      'computes in float32')),
    ('2.14.1+cu130', 'cpu', Tolerance(0, {}, 'measured: bitwise on the CPU (all cases, foreach '
                                             'and faithful kernels; Python 3.13)')),
    ('1.8.1+cu102', 'cpu', _TORCH1X),
    ('1.10.2+cu102', 'cpu', _TORCH1X),
    ('1.12.1+cu102', 'cpu', _TORCH1X),
    ('2.11.0+cu130', 'cuda', Tolerance({'default': 0, 'bfloat16': 8, 'float16': _UNMEASURED_ULP},
                                       {'bfloat16': _UNMEASURED_ATOL['bfloat16'],
                                        'float16': _UNMEASURED_ATOL['float16']},
                                       'measured on an NVIDIA H200: float32/float64 bitwise '
                                       'against the CPU goldens (all cases, foreach and faithful '
                                       'kernels); bfloat16 mul_/add_ (mmcv/mmdet) max 5 ULP, abs '
                                       '0.0078: the CUDA kernel rounds the bfloat16 product '
                                       'differently from the CPU one (the real upstream on CUDA '
                                       'gives the same values: bitwise in the live differential '
                                       'suite); lerp_ bitwise; float16 (kernel tests only, no '
                                       'golden case) keeps the unmeasured bound: CPU float16 '
                                       'arithmetic rounds intermediates, CUDA computes in float32')),
    ('*', 'cpu', Tolerance(_UNMEASURED_ULP, _UNMEASURED_ATOL,
                           'not measured: other builds may fuse mul+add (FMA) or change '
                           'lerp/vectorisation, <= 1 ULP per update, <= 12 updates per case')),
    ('*', 'cuda', Tolerance(_UNMEASURED_ULP, _UNMEASURED_ATOL,
                            'not measured: CUDA kernels may contract mul+add (FMA) differently, '
                            '<= 1 ULP per update, <= 12 updates per case')),
)


def tolerance_for(torch_version: Optional[str] = None, device: str = 'cpu') -> Tolerance:
    """The policy row for ``torch_version`` (default: this torch) on ``device`` ('cpu', 'cuda')."""
    version = torch_version or torch.__version__
    # the device type by name: torch < 1.12 cannot even parse torch.device('mps')
    dev = device.type if isinstance(device, torch.device) else str(device).split(':')[0]
    for pattern, row_dev, tol in TOLERANCE_TABLE:
        if row_dev == dev and fnmatch.fnmatchcase(version, pattern):
            return tol
    raise LookupError(f'no tolerance policy for torch {version} on {dev!r}; known devices: '
                      f"{sorted({d for _, d, _ in TOLERANCE_TABLE})}")


#: for a kernel class with no recording in the golden file (ARM NEON/SVE, another GPU, a future
#: ISA). Measured between the two classes recorded here, torch's scalar kernels
#: (``cpu-x86_64-DEFAULT``, separate multiply and add) and its FMA ones (``cpu-x86_64-AVX2``):
#: per update op (``benchmarks/kernel_class_ulp.py``, 2**16 values in [-2, 2], momenta 2e-4 to
#: 0.9998, torch 2.13.0): ``mul_`` + ``add_(alpha=)`` and ``lerp_`` differ by at most
#: 1 x eps(dtype) x max(1, |value|) (float32, float64, bfloat16 alike), i.e. up to 2e4 ULP of
#: the result where the update cancels near zero; the SWA ``add_`` of a quotient is bitwise.
#: On every golden case (62 files of reference/trajectories and reference/native): float32 and
#: float64 differ by at most 1 x eps(dtype) absolute, bfloat16 is bitwise. The bound: 16 ULP of
#: the result or 16 x eps(dtype) absolute: 16 updates' worth at |value| <= 1, for golden cases
#: of at most 12 updates per tensor whose earlier errors shrink at every update.
UNRECORDED_CLASS = Tolerance(_UNMEASURED_ULP, _UNMEASURED_ATOL,
                             'measured between scalar and FMA kernels: <= 1 eps x max(1, |value|) '
                             'per update op, <= 1 eps abs per golden case')


def _as_map(spec: TolSpec) -> Mapping[Any, float]:
    return spec if isinstance(spec, Mapping) else {'default': float(spec)}


def combine(*specs: Tuple[TolSpec, TolSpec]) -> Tuple[TolSpec, TolSpec]:
    """The per-dtype maximum of several ``(ulp, atol)`` pairs."""
    ulp: dict = {}
    atol: dict = {}
    for u, a in specs:
        for out, spec in ((ulp, u), (atol, a)):
            for k, v in _as_map(spec).items():
                k = str(k).replace('torch.', '')
                out[k] = max(out.get(k, 0.0), float(v))
    for out in (ulp, atol):
        base = out.get('default', 0.0)
        for k in list(out):
            out[k] = max(out[k], base)
    return ulp, atol
