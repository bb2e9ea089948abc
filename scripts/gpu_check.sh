#!/usr/bin/env bash
# The GPU verification and benchmarks in one command (issue 12), for a machine with an
# NVIDIA device and a build made with CUDA here (MOE_WITH_CUDA=AUTO/ON, sm_90 by default),
# in under 8 minutes (on a device that cannot build, carry what scripts/gpu_pack.sh packs).
# Writes everything under ${OUT:-gpu-out}/ and prints a summary last:
#   1. tests: the CUDA kernels against the CPU reference (moe_cuda_test), every Backend op
#      (backend_ops_test), the MoE layer through the CUDA backend (cuda_backend_test), the
#      whole model on every golden fixture on cuda (model_golden_test Devices/*cuda*), and
#      the serving end-to-end tests, whose moe-server runs on the GPU (--device auto);
#   2. moe_gpu_bench: the MoE layer at Mixtral and OLMoE shapes against the copy bandwidth
#      and bf16 GEMM rate it measures;
#   3. engine_bench on a 4-layer OLMoE-shaped bf16 checkpoint written there (decode at
#      batch 1 and 64 against those bounds), and serving_bench at 64 streams over gRPC;
#   4. where .gpu/vllm holds vLLM's fused_moe kernel (VLLM=1 scripts/gpu_pack.sh) and the
#      image has torch and triton: that kernel on the same shapes, and the time ratio
#      (tools/vllm_fused_moe_bench.py --compare).
# Environment: BUILD (default build), SKIP_BENCH=1 (tests only). Exit status: the number
# of steps that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
out="${OUT:-gpu-out}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

# The libraries the project's binaries need beyond the image's: a packed build's
# (.gpu/lib, scripts/gpu_pack.sh), and the CUDA runtime and cuBLAS of the nvidia-* wheels
# where the image has no toolkit. Only the binaries get them (bin_env); Python keeps the
# image's own.
libs=""
[ -d .gpu/lib ] && libs="$(pwd)/.gpu/lib"
if ! ldconfig -p | grep -q 'libcublas\.so\.13'; then
  for d in $(python3 - <<'EOF' 2>/dev/null
import glob, os, site
for root in site.getsitepackages():
    for lib in glob.glob(os.path.join(root, "nvidia", "*", "lib")):
        print(lib)
EOF
  ); do libs="${libs:+$libs:}$d"; done
fi
bin_env() { LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
note "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
note "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"

failed=0
run_test() {  # name binary [gtest args...]
  local name=$1 bin=$2
  shift 2
  if [ ! -x "$bin" ]; then
    note "FAIL $name: $bin not built (configure with -DMOE_WITH_CUDA=ON)"
    failed=$((failed + 1))
    return
  fi
  if bin_env timeout 240 "$bin" "$@" --gtest_output="json:$out/$name.json" > "$out/$name.txt" 2>&1; then
    note "ok   $name: $(grep -E '^\[  PASSED  \]' "$out/$name.txt" | tail -1)"
  else
    failed=$((failed + 1))
    note "FAIL $name: $(grep -cE '^\[  FAILED  \]' "$out/$name.txt") failed lines; see $name.txt"
    grep -E '^\[  FAILED  \]' "$out/$name.txt" | head -5 | tee -a "$summary"
  fi
  if grep -q '^\[  SKIPPED \]' "$out/$name.txt"; then
    note "     $name skipped: $(grep -m1 -A1 'Skipped\|SKIPPED' "$out/$name.txt" | tail -1)"
  fi
}

run_test moe_cuda_test "$build/tests/gpu/moe_cuda_test"
run_test backend_ops_test "$build/tests/gpu/backend_ops_test"
run_test cuda_backend_test "$build/tests/gpu/cuda_backend_test"
run_test model_golden_cuda "$build/tests/golden/model_golden_test" --gtest_filter='Devices/*cuda*'
# The serving end-to-end tests start moe-server with its default --device auto: the GPU.
if (cd "$build" && bin_env timeout 300 ctest -L e2e -j4 --output-on-failure) > "$out/e2e.txt" 2>&1; then
  note "ok   e2e (moe-server on the GPU): $(grep 'tests passed' "$out/e2e.txt")"
else
  failed=$((failed + 1))
  note "FAIL e2e: $(grep 'tests passed\|tests failed' "$out/e2e.txt")"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  if bin_env timeout 180 "$build/bench/moe_gpu_bench" --output "$out/moe_gpu_bench.json" \
      > "$out/moe_gpu_bench.txt" 2>&1; then
    cat "$out/moe_gpu_bench.txt" >> "$summary"
    tail -30 "$out/moe_gpu_bench.txt"
  else
    failed=$((failed + 1))
    note "FAIL moe_gpu_bench: $(tail -2 "$out/moe_gpu_bench.txt")"
  fi
  bounds=$(python3 -c "import json; d = json.load(open('$out/moe_gpu_bench.json')); \
print(d['copy_bandwidth_gbps'], d['bf16_gemm_tflops'] * 1000)" 2>/dev/null)
  if [ -n "$bounds" ]; then
    read -r bw gemm <<<"$bounds"
    ckpt=/tmp/moe-olmoe-4l
    if python3 tools/make_bench_checkpoint.py --shape olmoe-full --layers 4 --out "$ckpt" \
        > "$out/checkpoint.txt" 2>&1 &&
       bin_env timeout 150 "$build/bench/engine_bench" --device cuda --model "$ckpt" --prompt-tokens 512 \
        --decode-tokens 32 --batch 1,64 --rounds 3 --bound-bandwidth "$bw" --bound-gemm "$gemm" \
        --output "$out/engine_bench_cuda.json" > "$out/engine_bench_cuda.txt" 2>&1; then
      cat "$out/engine_bench_cuda.txt" >> "$summary"
      tail -8 "$out/engine_bench_cuda.txt"
      if BUILD="$build" LEVELS=1,64 REQUESTS_PER_STREAM=2 MAX_TOKENS=64 \
          BOUND_BANDWIDTH="$bw" BOUND_GEMM="$gemm" OUTPUT="$out/serving_cuda.json" \
          bin_env timeout 150 bash bench/serving_bench.sh --model "$ckpt" --device cuda --max-seqs 64 \
          > "$out/serving_cuda.txt" 2>&1; then
        tail -4 "$out/serving_cuda.txt" | tee -a "$summary"
      else
        failed=$((failed + 1))
        note "FAIL serving_bench: $(tail -2 "$out/serving_cuda.txt")"
      fi
    else
      failed=$((failed + 1))
      note "FAIL engine_bench: $(tail -2 "$out/engine_bench_cuda.txt" "$out/checkpoint.txt" 2>/dev/null)"
    fi
  fi
  if [ -f .gpu/vllm/vllm_kernel.py ] && python3 -c 'import torch, triton' 2>/dev/null; then
    if timeout 180 python3 tools/vllm_fused_moe_bench.py --run .gpu/vllm \
        --output "$out/vllm_fused_moe.json" > "$out/vllm_fused_moe.txt" 2>&1; then
      python3 tools/vllm_fused_moe_bench.py --compare "$out/moe_gpu_bench.json" \
        "$out/vllm_fused_moe.json" | tee -a "$summary"
    else
      failed=$((failed + 1))
      note "FAIL vllm_fused_moe_bench: $(tail -3 "$out/vllm_fused_moe.txt")"
    fi
  fi
fi
note "gpu_check: $failed step(s) failed"
exit "$failed"
