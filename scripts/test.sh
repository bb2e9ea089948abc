#!/usr/bin/env bash
# Install what is missing, build, and run every test (labels cpu, golden, e2e; gpu tests
# skip themselves where there is no CUDA device).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
