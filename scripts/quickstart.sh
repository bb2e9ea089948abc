#!/usr/bin/env bash
# Quick start: install what is missing, build (Release), serve the default model on
# 127.0.0.1 (gRPC 50051, OpenAI-compatible HTTP 8000) until Ctrl-C or SIGTERM.
# Arguments go to moe-server, e.g. --model DIR --http-port 8080 --dtype bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
echo "quickstart: try   curl -s 127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' -d '{\"model\": \"default\", \"prompt\": \"And the king said unto\", \"max_tokens\": 24}'" >&2
exec ./build/server/moe-server "$@"
