#!/usr/bin/env bash
# Install what is missing, build, and run every test (labels cpu, golden, e2e; gpu tests
# skip themselves where there is no CUDA device).
#
#   scripts/test.sh              the Release build in build/ and every test (what CI runs)
#   scripts/test.sh --sanitize   also: an ASan+UBSan build in build-asan/ running the cpu,
#                                golden and e2e tests, and a TSan build in build-tsan/
#                                running the engine, scheduler and server tests (slow:
#                                README "Sanitizers" has the times)
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    *) echo "scripts/test.sh: unknown argument '$arg' (try --sanitize)" >&2; exit 2 ;;
  esac
done
bash scripts/install_deps.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
if [ "$sanitize" = 1 ]; then
  # No CUDA and no benches: nvcc does not take -fsanitize, and benches are not tests.
  common=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_WITH_CUDA=OFF -DMOE_BUILD_BENCH=OFF)
  cmake -S . -B build-asan "${common[@]}" -DMOE_SANITIZE=address,undefined
  cmake --build build-asan -j"$(nproc)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$(nproc)" --timeout 1200 \
      -L 'cpu|golden|e2e'
  cmake -S . -B build-tsan "${common[@]}" -DMOE_SANITIZE=thread
  cmake --build build-tsan -j"$(nproc)"
  # The engine thread, the kernel pool, the step loop and both front ends.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir build-tsan --output-on-failure -j"$(nproc)" --timeout 1200 \
      -R 'Engine|Serving|StepLoop|BatchRunner|Parallel|Http|Grpc|Client|Auth|Tls'
fi
