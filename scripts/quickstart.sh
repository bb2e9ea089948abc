#!/usr/bin/env bash
# Quick start: install what is missing, build (Release), generate with the default model.
# Arguments go to moe-generate, e.g. --prompt "The king said" --max-tokens 48.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
exec ./build/server/moe-generate "$@"
