#!/usr/bin/env bash
# One short GPU session for issue 9 (CPU-vs-GPU tolerance policy), about 2-4 minutes:
#   1. gpu_tolerance.py: max ULP of compat_ema on cuda vs the goldens (2.13.0 and 1.13.1
#      recordings) and cpu vs cuda, per generation/dtype/kernel path: the table to record in
#      MIGRATION.md "Tolerance policy" (the `any | cuda` row and compat_ema.testing.golden);
#   2. the gpu-marked checks: kernels and averaged models cpu vs cuda (tests/test_gpu.py),
#      golden trajectories replayed on cuda (trajectory and native goldens).
# Usage, from the repository root:  PYTHON=python OUT=/path/to/out bash benchmarks/gpu_tolerance.sh
set -u
PY=${PYTHON:-python}
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  2>&1 | tee "$OUT/device.txt"
timeout 200 $PY benchmarks/gpu_tolerance.py --json "$OUT/tol_goldens213.json" 2>&1 | tee "$OUT/tol_goldens213.md"
timeout 120 $PY benchmarks/gpu_tolerance.py --goldens reference/torch113 --kernels foreach \
  --json "$OUT/tol_goldens113.json" 2>&1 | tee "$OUT/tol_goldens113.md"
timeout 200 $PY -m pytest -m gpu -q -p no:cacheprovider -rs tests/test_gpu.py \
  tests/test_golden_trajectories.py tests/test_native_golden.py 2>&1 | tee "$OUT/gpu_tests.txt"
