#!/usr/bin/env bash
# HTTP against gRPC on one moe-server (default model): ROUNDS (3) interleaved pairs of
# moe-client bench runs at concurrency CONCURRENCY (32), one over each protocol, with the
# same synthetic requests; prints TTFT p50/p99 and output tok/s per run and the medians of
# the per-round HTTP/gRPC TTFT p50 and p99 ratios (exit 1 above 1.2), and writes $OUTPUT (default
# bench/results/http_vs_grpc_cpu.json). RATE=R runs an open loop at R requests/s instead
# (the same offered load on both protocols); SERVER_ARGS are extra moe-server flags.
# Extra arguments go to moe-client bench.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
# shellcheck source=bench/start_server.sh
source bench/start_server.sh
# shellcheck disable=SC2086
start_server ${SERVER_ARGS:-}
run() {  # protocol round
  local endpoint
  if [ "$1" = http ]; then endpoint=(--url "http://127.0.0.1:$http_port"); else
    endpoint=(--target "127.0.0.1:$grpc_port"); fi
  local load=(--concurrency "${CONCURRENCY:-32}")
  if [ -n "${RATE:-}" ]; then load=(--request-rate "$RATE"); fi
  "$build/client/moe-client" bench "${endpoint[@]}" "${load[@]}" \
    --num-requests "${NUM_REQUESTS:-256}" --warmup "${WARMUP:-32}" --ignore-eos \
    --input-len 128 --output-len 64 --seed 0 --output "$work/$1_$2.json" "${@:3}" > /dev/null
}
for r in $(seq "$rounds"); do
  run http "$r" "$@"
  run grpc "$r" "$@"
done
mkdir -p bench/results
set +e
python3 - "$work" "$rounds" "${OUTPUT:-bench/results/http_vs_grpc_cpu.json}" <<'PY'
import json, statistics, sys
work, rounds, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows, ratios = [], {}
for r in range(1, rounds + 1):
    s = {p: json.load(open(f"{work}/{p}_{r}.json"))["summary"] for p in ("http", "grpc")}
    for p in ("http", "grpc"):
        t = s[p]["ttft_seconds"]
        rows.append({"round": r, "protocol": p, "ttft_p50_ms": t["p50"] * 1e3,
                     "ttft_p99_ms": t["p99"] * 1e3,
                     "output_tok_s": s[p]["output_token_throughput"], "failed": s[p]["failed"]})
        print(f"round {r} {p:4s}: TTFT p50 {t['p50']*1e3:7.1f} ms  p99 {t['p99']*1e3:7.1f} ms"
              f"  {s[p]['output_token_throughput']:8.1f} tok/s  failed {s[p]['failed']}")
    for q in ("p50", "p99"):
        ratios.setdefault(q, []).append(s["http"]["ttft_seconds"][q] / s["grpc"]["ttft_seconds"][q])
medians = {q: statistics.median(v) for q, v in ratios.items()}
for q, v in ratios.items():
    print(f"HTTP/gRPC TTFT {q} ratio per round: {', '.join(f'{x:.3f}' for x in v)};"
          f" median {medians[q]:.3f} (target <= 1.2)")
json.dump({"rows": rows, "ttft_ratios": ratios, "median_ratios": medians}, open(output, "w"),
          indent=2)
sys.exit(0 if max(medians.values()) <= 1.2 else 1)
PY
status=$?
rm -rf "$work"
exit $status
