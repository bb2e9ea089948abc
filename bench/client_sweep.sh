#!/usr/bin/env bash
# Starts moe-server on the default model (127.0.0.1, free ports), runs a moe-client bench
# sweep over concurrency 1, 4, 16 and 32 over gRPC with fixed output lengths, writes
# bench/results/client_sweep_cpu.json and bench/results/client_sweep_cpu.png (needs
# gnuplot: scripts/install_deps.sh), prints the table and stops the server. Extra
# arguments go to moe-client bench (e.g. --temperature 0); NUM_REQUESTS, WARMUP, INPUT_LEN
# and OUTPUT_LEN set the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
out=$(mktemp)
"$build/server/moe-server" --host 127.0.0.1 --grpc-port 0 --http-port -1 > "$out" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q "grpc listening on" "$out" && break; sleep 0.1; done
port=$(sed -n 's/.*grpc listening on .*:\([0-9]*\)$/\1/p' "$out")
if [ -z "$port" ]; then
  echo "client_sweep: moe-server did not start:" >&2
  cat "$out" >&2
  exit 1
fi
mkdir -p bench/results
"$build/client/moe-client" bench --target "127.0.0.1:$port" --sweep 1,4,16,32 \
  --num-requests "${NUM_REQUESTS:-128}" --warmup "${WARMUP:-8}" --ignore-eos \
  --input-len "${INPUT_LEN:-128}" --output-len "${OUTPUT_LEN:-64}" --seed 0 \
  --output bench/results/client_sweep_cpu.json --plot bench/results/client_sweep_cpu.png "$@"
