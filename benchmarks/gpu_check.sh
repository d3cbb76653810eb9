#!/usr/bin/env bash
# Every GPU check of the network in one run (about 7 minutes on an H100/H200), for a session that has a GPU:
#   1. the GPU-only forms (folded blurs, sub-pixel upsampling, compiled Triton epilogue, CUDA graphs) against the
#      reference forward (tests/test_arch_cuda.py);
#   2. GPEN-2048 fp16 time per face, peak VRAM and error against fp32, batch 1 and 4, for each combination of
#      the GPU options (sub-pixel upsampling, fused epilogue: both on by default on CUDA, CUDA graphs: off), then
#      bf16 and fp32 (with and without folded blurs), then 512 and 1024;
#   3. with PIPELINE_DATA=DIR (holding grace_hopper.jpg and face_detection_yunet_2023mar.onnx): every pipeline stage
#      for one face on the GPU (benchmarks/bench_pipeline.py), with the GPU options on, off, and with CUDA graphs;
#   4. a kernel profile of the default forward;
#   5. with REFERENCE=DIR (a checkout of the official GPEN code): the official network at 2048 beside ours.
# Steps are skipped once BUDGET_S seconds (default 480) have passed, so a time-limited machine still returns a
# complete log of what ran.
# Usage: [REFERENCE=DIR] [PIPELINE_DATA=DIR] [BUDGET_S=480] bash benchmarks/gpu_check.sh [python]
# The log is also written to $OUT/gpu_check.log when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
LOG="${OUT:-/tmp}/gpu_check.log"
BUDGET_S="${BUDGET_S:-480}"
export PYTHONUNBUFFERED=1
START=$SECONDS

step() {  # step NAME COMMAND...: run it unless the time budget is spent
  local name="$1"
  shift
  if (( SECONDS - START > BUDGET_S )); then
    echo "=== skipped (time budget of ${BUDGET_S} s spent): $name"
    return
  fi
  echo "=== $name  [t=$((SECONDS - START)) s]"
  "$@"
}

bench() { "$PY" benchmarks/bench_gpen.py --device cuda --runs 20 --warmup 5 "$@"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', \
torch.backends.cudnn.version(), torch.cuda.get_device_name())"
  step "GPU forms against the reference" "$PY" -m pytest -q -p no:cacheprovider tests/test_arch_cuda.py
  for options in "--subpixel off --fused off" "--subpixel on --fused off" "--subpixel off --fused on" "" \
      "--cuda-graphs"; do
    # shellcheck disable=SC2086
    step "2048 fp16 ${options:-(defaults)}" bench --sizes 2048 --dtypes fp16 --batches 1 4 $options
  done
  if [[ -n "${PIPELINE_DATA:-}" ]]; then
    pipeline() { "$PY" benchmarks/bench_pipeline.py --device cuda --dtype fp16 --runs 10 \
      --image "$PIPELINE_DATA/grace_hopper.jpg" --detector-dir "$PIPELINE_DATA" "$@"; }
    step "pipeline stages, GPEN-2048 fp16 (defaults)" pipeline
    step "pipeline stages, GPEN-2048 fp16 (GPU options off)" pipeline --subpixel off --fused off --cudnn-benchmark off
    step "pipeline stages, GPEN-2048 fp16 (CUDA graphs)" pipeline --cuda-graphs
  fi
  step "2048 bf16/fp32" bench --sizes 2048 --dtypes bf16 fp32 --batches 1 4
  step "2048 fp32 without folded blurs" bench --sizes 2048 --dtypes fp32 --batches 1 4 --fold-blur off
  step "profile 2048 fp16" "$PY" benchmarks/profile_gpen.py --device cuda --size 2048 --dtype fp16 --rows 20
  step "512/1024 fp16" bench --sizes 512 1024 --dtypes fp16 --batches 1 4
  if [[ -n "${REFERENCE:-}" ]]; then
    step "official beside ours, 2048 fp16/fp32 batch 1" \
      bench --sizes 2048 --dtypes fp16 fp32 --batches 1 --reference "$REFERENCE"
  fi
  echo "=== done [t=$((SECONDS - START)) s]"
} 2>&1 | tee "$LOG"
