#!/usr/bin/env bash
# The GPU verification in one command, for a machine with an NVIDIA device and a build
# made with CUDA (MOE_WITH_CUDA=AUTO/ON, sm_90 by default): runs the CUDA kernel tests
# against the CPU reference and writes their output (and nvidia-smi's) to ${OUT:-gpu-out}/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
test_bin=build/tests/gpu/moe_cuda_test
if [ ! -x "$test_bin" ]; then
  echo "gpu_check: $test_bin not built (configure with -DMOE_WITH_CUDA=ON)" >&2
  exit 2
fi
"$test_bin" --gtest_output="json:$out/moe_cuda_test.json" 2>&1 | tee "$out/moe_cuda_test.txt"
