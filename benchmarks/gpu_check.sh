#!/usr/bin/env bash
# Every GPU check of the network in one run (about 5 minutes on an H100/H200), for a session that has a GPU:
#   1. the GPU-only forms (folded blurs, sub-pixel upsampling, compiled Triton epilogue, CUDA graphs) against the
#      reference forward (tests/test_arch_cuda.py);
#   2. GPEN-2048 fp16 time per face, peak VRAM and error against fp32, batch 1 and 4, for each combination of
#      options, then bf16 and fp32 with both options, then 512 and 1024 with the defaults;
#   3. a kernel profile of the fastest combination.
# Usage: bash benchmarks/gpu_check.sh [python]   (log also written to $OUT/gpu_check.log when OUT is set)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
LOG="${OUT:-/tmp}/gpu_check.log"
export PYTHONUNBUFFERED=1
{
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', \
torch.backends.cudnn.version(), torch.cuda.get_device_name())"
  "$PY" -m pytest -q -p no:cacheprovider tests/test_arch_cuda.py tests/test_arch_ops.py
  bench() { "$PY" benchmarks/bench_gpen.py --device cuda --sizes 2048 --runs 20 --warmup 5 "$@"; }
  for options in "" "--subpixel" "--fused" "--subpixel --fused" "--subpixel --fused --cuda-graphs"; do
    # shellcheck disable=SC2086
    bench --dtypes fp16 --batches 1 4 $options
  done
  bench --dtypes bf16 fp32 --batches 1 4 --subpixel --fused
  "$PY" benchmarks/bench_gpen.py --device cuda --sizes 512 1024 --dtypes fp16 --batches 1 4 --runs 20 --warmup 5
  "$PY" benchmarks/profile_gpen.py --device cuda --size 2048 --dtype fp16 --subpixel --fused --rows 20
} 2>&1 | tee "$LOG"
