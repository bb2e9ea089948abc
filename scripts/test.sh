#!/usr/bin/env bash
# Install what is missing, build, and run every test (labels cpu, golden, e2e; gpu tests
# skip themselves where there is no CUDA device).
#
#   scripts/test.sh              the Release build in build/ and every test
#   scripts/test.sh --asan       then an ASan+UBSan build in build-asan/ running the cpu,
#                                golden and e2e tests (what CI runs)
#   scripts/test.sh --tsan       then a TSan build in build-tsan/ running the engine,
#                                scheduler, kernel-pool and server tests
#   scripts/test.sh --sanitize   both (README "Sanitizers" has the times)
set -euo pipefail
cd "$(dirname "$0")/.."
asan=0
tsan=0
for arg in "$@"; do
  case "$arg" in
    --asan) asan=1 ;;
    --tsan) tsan=1 ;;
    --sanitize) asan=1 tsan=1 ;;
    *) echo "scripts/test.sh: unknown argument '$arg' (--asan, --tsan or --sanitize)" >&2; exit 2 ;;
  esac
done
bash scripts/install_deps.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
# No CUDA and no benches in the sanitizer builds: nvcc does not take -fsanitize, and
# benches are not tests.
common=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_WITH_CUDA=OFF -DMOE_BUILD_BENCH=OFF)
if [ "$asan" = 1 ]; then
  # -O1 -g1 (line tables, all a sanitizer report needs) halves the compile time of the
  # Beast/Asio coroutines in server/http_server.cc (9 min at -O2 -g on one core of the
  # EPYC, 4.5 min so), which is most of what keeps CI inside its 30 minutes.
  cmake -S . -B build-asan "${common[@]}" -DMOE_SANITIZE=address,undefined \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
  cmake --build build-asan -j"$(nproc)"
  # MemoryTest measures the server's RSS, which ASan's shadow memory would swamp.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$(nproc)" --timeout 1200 \
      -L 'cpu|golden|e2e' -E 'MemoryTest'
fi
if [ "$tsan" = 1 ]; then
  cmake -S . -B build-tsan "${common[@]}" -DMOE_SANITIZE=thread
  cmake --build build-tsan -j"$(nproc)"
  # The kernel thread pool, the step loop and engine thread, and both front ends.
  # tests/tsan.supp: races inside the uninstrumented Debian libraries only.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    ctest --test-dir build-tsan --output-on-failure -j"$(nproc)" --timeout 1200 \
      -R 'Parallel|Engine|Serving|StepLoop|BatchRunner|Policy|Http|Grpc|Client|Auth|Tls'
fi
