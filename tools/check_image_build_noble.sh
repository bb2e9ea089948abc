#!/usr/bin/env bash
# Runs the steps of deploy/docker/Dockerfile without Docker (no engine runs on our CI
# machines): debootstrap Ubuntu 24.04 (noble, the CUDA images' base) twice, once as the
# build stage and once as the runtime stage, from archive.ubuntu.com.
#
#   build stage:   scripts/install_deps.sh, the Release build, deploy/make_bundle.sh,
#                  exactly as the Dockerfile runs them, but with -DMOE_WITH_CUDA=OFF (the
#                  CUDA toolkit comes with the nvidia/cuda devel image, not from Ubuntu);
#                  with --with-tests, also the tests and ctest, so the whole suite runs
#                  under noble's GCC 13 and libraries.
#   runtime stage: a bare noble (no -dev packages, as the CUDA runtime image) with the
#                  bundle unpacked in /opt/moe-serve; moe-server runs as uid 10001 on
#                  127.0.0.1, moe-client from the bundle generates through it over gRPC,
#                  and the Dockerfile's HEALTHCHECK command passes.
#
# Needs root (debootstrap, chroot, mounting /proc), about 3 GB in WORK and 20-30 minutes
# on 2 cores. A tool, not a test: CI does not reach archive.ubuntu.com.
# Usage: tools/check_image_build_noble.sh [--with-tests] [WORK_DIR]
set -euo pipefail
with_tests=OFF
if [ "${1:-}" = "--with-tests" ]; then with_tests=ON; shift; fi
work=${1:-/tmp/moe-noble}
root=$(cd "$(dirname "$0")/.." && pwd)
mirror=${MIRROR:-http://archive.ubuntu.com/ubuntu}
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
}
trap cleanup EXIT
stage() {  # stage NAME: a noble minbase root in $work/NAME, /proc mounted
  local dir=$work/$1
  if [ ! -x "$dir/usr/bin/apt-get" ]; then
    # Debian's debootstrap has no noble script; every Ubuntu release uses gutsy's.
    debootstrap --variant=minbase --components=main,universe --no-check-gpg noble "$dir" \
      "$mirror" /usr/share/debootstrap/scripts/gutsy
  fi
  mountpoint -q "$dir/proc" || { mount -t proc proc "$dir/proc"; mounts+=("$dir/proc"); }
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
}

echo "== build stage"
stage build
rm -rf "$work/build/src" "$work/build/out" && mkdir -p "$work/build/src"
git -C "$root" archive HEAD | tar -x -C "$work/build/src"
chroot "$work/build" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash -c "
  set -euo pipefail
  cd /src
  bash scripts/install_deps.sh
  g++ --version | head -1; cmake --version | head -1
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=OFF \
    -DMOE_BUILD_TESTS=$with_tests -DMOE_BUILD_BENCH=OFF
  cmake --build build -j\$(nproc)
  bash deploy/make_bundle.sh build /out
  if [ $with_tests = ON ]; then ctest --test-dir build -j\$(nproc) --output-on-failure; fi"
tarball=$(ls "$work"/build/out/moe-serve-*-linux-x86_64.tar.gz)

echo "== runtime stage"
stage runtime
rm -rf "$work/runtime/opt/moe-serve" && mkdir -p "$work/runtime/opt/moe-serve"
tar -C "$work/runtime/opt/moe-serve" --strip-components=1 -xzf "$tarball"
run() { chroot --userspec=10001:10001 "$work/runtime" env -i PATH=/opt/moe-serve/bin:/usr/bin:/bin "$@"; }
# chroot execs env, which execs moe-server: $! is the server's pid, SIGTERM reaches it.
chroot --userspec=10001:10001 "$work/runtime" env -i PATH=/opt/moe-serve/bin:/usr/bin:/bin \
  moe-server --host 127.0.0.1 --grpc-port 0 --http-port 0 >"$work/server.out" 2>"$work/server.err" &
server=$!
for _ in $(seq 100); do grep -q "http listening" "$work/server.out" && break; sleep 0.2; done
grpc=$(sed -n 's/.*grpc listening on \(.*\)$/\1/p' "$work/server.out")
http_port=$(sed -n 's/.*http listening on .*:\([0-9]*\)$/\1/p' "$work/server.out")
[ -n "$grpc" ] && [ -n "$http_port" ] || { cat "$work/server.err"; exit 1; }
run moe-client generate --target "$grpc" --prompt "In the beginning" --max-tokens 16 --temperature 0
healthcheck=$(python3 "$root/tests/deploy/dockerfile_healthcheck.py" \
  "$root/deploy/docker/Dockerfile" "$http_port")
run bash -c "$healthcheck" && echo "HEALTHCHECK passed (uid 10001, bare noble)"
kill -TERM "$server"
status=0; wait "$server" || status=$?; server=""
[ "$status" -eq 0 ] || { echo "moe-server exited $status after SIGTERM" >&2; exit 1; }
! run bash -c "$healthcheck" 2>/dev/null || { echo "HEALTHCHECK passes with no server" >&2; exit 1; }
echo "check_image_build_noble: build and runtime stages passed"
