#!/usr/bin/env bash
# Starts moe-server on the default model (127.0.0.1, a free port), runs serving_bench at
# concurrency 1, 8, 32 and 64 over gRPC, writes bench/results/serving_grpc_cpu.json and
# stops the server. Extra arguments go to moe-server (e.g. --max-batched-tokens 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
out=$(mktemp)
"$build/server/moe-server" --host 127.0.0.1 --grpc-port 0 --http-port -1 "$@" > "$out" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q "grpc listening on" "$out" && break; sleep 0.1; done
port=$(sed -n 's/.*grpc listening on .*:\([0-9]*\)$/\1/p' "$out")
mkdir -p bench/results
"$build/bench/serving_bench" --target "127.0.0.1:$port" --concurrency 1,8,32,64 \
  --requests-per-stream "${REQUESTS_PER_STREAM:-4}" --max-tokens "${MAX_TOKENS:-64}" \
  --output bench/results/serving_grpc_cpu.json
