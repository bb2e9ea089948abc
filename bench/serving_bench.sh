#!/usr/bin/env bash
# Starts moe-server (127.0.0.1, free ports), runs serving_bench over gRPC at each
# concurrency of $LEVELS (default 1,8,32) with the rooflines read from the server's
# /metrics, writes $OUTPUT (default bench/results/serving_grpc_cpu.json) and stops the
# server. Extra arguments go to moe-server, e.g.
#   bash bench/serving_bench.sh --model /work/ckpt/moe-1b --max-seqs 64
# Environment: BUILD (build dir), LEVELS, REQUESTS_PER_STREAM (4), MAX_TOKENS (64),
# OUTPUT, DTYPE (the served dtype for the GEMM-rate bound, default bfloat16),
# TEMPERATURE (0: greedy), TOP_P (1), TOP_K (0); for a server on a GPU, BOUND_BANDWIDTH
# (GB/s) and BOUND_GEMM (GFLOP/s), the device's bounds measured beside the run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
# shellcheck source=bench/start_server.sh
source bench/start_server.sh
start_server "$@"
mkdir -p bench/results
"$build/bench/serving_bench" --target "127.0.0.1:$grpc_port" \
  --metrics-url "http://127.0.0.1:$http_port" --dtype "${DTYPE:-bfloat16}" \
  --concurrency "${LEVELS:-1,8,32}" \
  --requests-per-stream "${REQUESTS_PER_STREAM:-4}" --max-tokens "${MAX_TOKENS:-64}" \
  --temperature "${TEMPERATURE:-0}" --top-p "${TOP_P:-1}" --top-k "${TOP_K:-0}" \
  ${BOUND_BANDWIDTH:+--bound-bandwidth "$BOUND_BANDWIDTH"} \
  ${BOUND_GEMM:+--bound-gemm "$BOUND_GEMM"} \
  --output "${OUTPUT:-bench/results/serving_grpc_cpu.json}"
