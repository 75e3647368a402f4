#!/usr/bin/env bash
# One short GPU session for issue 8 (about 3-5 minutes on an H100):
#   1. CUDA bitwise checks: fast (foreach, storage exchange) == faithful per-tensor path,
#      for every kernel and dtype and for every hook (tests/test_kernels.py, marked gpu);
#   2. bench_ema.py on CUDA (absolute times; upstream columns are n/a unless the real
#      mmcv/mmdet/mmengine are importable there);
#   3. extra memory on CUDA (max_memory_allocated) for the ResNet-50 shape.
# Usage, from the repository root:  PYTHON=python OUT=/path/to/out bash benchmarks/gpu.sh
set -u
PY=${PYTHON:-python}
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  2>&1 | tee "$OUT/device.txt"
timeout 200 $PY -m pytest tests/test_kernels.py -m gpu -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu_tests.txt"
timeout 200 $PY benchmarks/bench_ema.py --device cuda --repeat 30 --json "$OUT/bench_cuda.json" 2>&1 \
  | tee "$OUT/bench_cuda.md"
timeout 150 $PY benchmarks/bench_ema.py --device cuda --repeat 3 --models resnet50 --memory \
  --works 'mmcv update' --json "$OUT/bench_cuda_memory.json" 2>&1 | tee "$OUT/bench_cuda_memory.md"
