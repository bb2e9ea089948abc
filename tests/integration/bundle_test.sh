#!/usr/bin/env bash
# The release bundle (deploy/make_bundle.sh) unpacked into an empty directory runs with a
# clean environment: every library the binaries load that is not the C runtime resolves
# inside the bundle, moe-generate generates with the bundled default model, and
# moe-server starts, prints its ports, passes the container image's HEALTHCHECK command
# (deploy/docker/Dockerfile, run here as written but for the port) and exits 0 on SIGTERM,
# after which the HEALTHCHECK fails.
# Usage: bundle_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: bundle_test.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "bundle_test: FAIL: $*" >&2; exit 1; }

tarball=$(bash "$root/deploy/make_bundle.sh" "$build" "$work/out" | tail -1)
mkdir "$work/unpacked"
tar -C "$work/unpacked" -xzf "$tarball"
dir=$(echo "$work"/unpacked/moe-serve-*)
[ -d "$dir/bin" ] || fail "no bin/ in $tarball"

# 1. ldd with no LD_LIBRARY_PATH: nothing missing, and everything but the C runtime from
#    the bundle's lib/.
for b in moe-server moe-generate moe-client; do
  out=$(env -i PATH=/usr/bin:/bin ldd "$dir/bin/$b")
  grep -q "not found" <<<"$out" && fail "$b: missing libraries:\n$out"
  while read -r soname path; do
    case "$soname" in
      linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*) continue ;;
    esac
    case "$(readlink -f "$path")" in
      "$dir"/lib/*) ;;
      *) fail "$b loads $soname from $path, outside the bundle" ;;
    esac
  done < <(echo "$out" | awk '/=>/ { print $1, $3 }')
done
echo "bundle_test: ldd resolves every non-libc library inside the bundle"

# BUNDLE names the minimum glibc: every GLIBC_ symbol version the files ask for is at most
# that, and this machine's glibc (which runs it below) is at least that.
glibc_min=$(sed -n 's/^requires: glibc >= \([0-9.]*\),.*/\1/p' "$dir/BUNDLE")
[ -n "$glibc_min" ] || fail "BUNDLE names no minimum glibc: $(cat "$dir/BUNDLE")"
newest=$(for f in "$dir"/bin/* "$dir"/lib/*; do objdump -T "$f"; done 2>/dev/null |
  grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
[ "$newest" = "$glibc_min" ] || fail "BUNDLE says glibc >= $glibc_min, the files need $newest"
host=$(getconf GNU_LIBC_VERSION | awk '{ print $2 }')
[ "$(printf '%s\n%s\n' "$glibc_min" "$host" | sort -V | head -1)" = "$glibc_min" ] ||
  fail "this machine's glibc $host is older than the bundle's minimum $glibc_min"
echo "bundle_test: BUNDLE requires glibc >= $glibc_min (this machine: $host)"

# 2. moe-generate with the bundled default model, clean environment.
out=$(env -i PATH=/usr/bin:/bin "$dir/bin/moe-generate" --prompt "In the beginning" \
      --max-tokens 8 2>&1) || fail "moe-generate exited non-zero: $out"
grep -q "8 generated" <<<"$out" || fail "moe-generate did not generate: $out"

# 3. moe-server from the bundle: it loads the bundled model, prints its ports, and drains on
#    SIGTERM with exit status 0.
env -i PATH=/usr/bin:/bin "$dir/bin/moe-server" --grpc-port 0 --http-port 0 \
  > "$work/server.out" 2> "$work/server.err" &
server=$!
for _ in $(seq 100); do
  grep -q "http listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
grep -q "grpc listening on" "$work/server.out" || fail "moe-server printed no ports: $(cat "$work/server.err")"
grep -q "loaded $dir/share/moe-serve/models/default" "$work/server.err" ||
  fail "moe-server did not load the bundled default model: $(cat "$work/server.err")"

# 4. The image's HEALTHCHECK: the exec-form CMD of deploy/docker/Dockerfile, with the
#    image's HTTP port 8000 replaced by the one this server took.
http_port=$(sed -n 's/.*http listening on .*:\([0-9][0-9]*\)$/\1/p' "$work/server.out")
[ -n "$http_port" ] || fail "no HTTP port in: $(cat "$work/server.out")"
healthcheck=$(python3 "$root/tests/deploy/dockerfile_healthcheck.py" \
  "$root/deploy/docker/Dockerfile" "$http_port") ||
  fail "no exec-form HEALTHCHECK CMD in deploy/docker/Dockerfile"
case "$healthcheck" in *"/$http_port"*) ;; *) fail "the HEALTHCHECK does not use port 8000: $healthcheck" ;; esac
env -i PATH=/usr/bin:/bin timeout 5 bash -c "$healthcheck" ||
  fail "the Dockerfile HEALTHCHECK fails against a live moe-server: $healthcheck"
echo "bundle_test: the image HEALTHCHECK passes against the live server"

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" -eq 0 ] || fail "moe-server exited $status after SIGTERM"
! env -i PATH=/usr/bin:/bin timeout 5 bash -c "$healthcheck" 2>/dev/null ||
  fail "the Dockerfile HEALTHCHECK passes with no server"
echo "bundle_test: 1 passed, 0 failed"
