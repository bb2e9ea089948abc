#!/usr/bin/env bash
# Starts moe-server on the default model (127.0.0.1, free ports), runs http_load_bench
# against its HTTP port (default: 10,000 idle keep-alive connections, 1,000 SSE streams,
# 500 slow-header clients, /health probed every 20 ms for 20 s), writes $OUTPUT (default
# bench/results/http_load_cpu.json), stops the server and exits with the bench's verdict.
# Extra arguments go to http_load_bench, e.g. --idle 2000 --hold 5.
# Environment: BUILD (build dir), OUTPUT, SERVER_ARGS (extra moe-server flags).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
# Room for 1,000 streams: 1,024 may wait, 64 run at a time (the defaults).
# shellcheck source=bench/start_server.sh
source bench/start_server.sh
# shellcheck disable=SC2086
start_server --max-queued 2048 ${SERVER_ARGS:-}
mkdir -p bench/results
ulimit -n "$(ulimit -Hn)"
"$build/bench/http_load_bench" --port "$http_port" --pid "$server" \
  --output "${OUTPUT:-bench/results/http_load_cpu.json}" "$@"
