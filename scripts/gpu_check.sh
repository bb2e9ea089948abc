#!/usr/bin/env bash
# The GPU verification in one command, for a machine with an NVIDIA device and a build
# made with CUDA (MOE_WITH_CUDA=AUTO/ON, sm_90 by default): runs every CUDA test against
# the CPU reference (the MoE kernels, the backend's ops, the MoE layer through the CUDA
# backend) and writes their output (and nvidia-smi's) to ${OUT:-gpu-out}/. Exit status:
# the number of test binaries that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
failed=0
for name in moe_cuda_test backend_ops_test cuda_backend_test; do
  bin="build/tests/gpu/$name"
  if [ ! -x "$bin" ]; then
    echo "gpu_check: $bin not built (configure with -DMOE_WITH_CUDA=ON)" >&2
    exit 2
  fi
  "$bin" --gtest_output="json:$out/$name.json" > "$out/$name.txt" 2>&1 || failed=$((failed + 1))
  tail -3 "$out/$name.txt"
done
exit "$failed"
