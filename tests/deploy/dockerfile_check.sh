#!/usr/bin/env bash
# deploy/docker/Dockerfile without a Docker engine (none runs on these machines): checks
# what can be checked against the rest of the repository.
#   - two stages: an nvidia/cuda -devel- build stage, an nvidia/cuda -runtime- final stage
#     with the same CUDA version and OS, the final stage copying only from the build stage;
#   - the build stage's files exist, its CMake options are options of CMakeLists.txt, and
#     the bundle name it unpacks is the one deploy/make_bundle.sh writes;
#   - the final stage runs as a non-root user, declares /models as a volume, exposes the
#     gRPC and HTTP ports that `moe-server --help` gives as defaults, has a HEALTHCHECK on
#     the HTTP port's /health with a start period, and its entry point is moe-server.
# The HEALTHCHECK command itself is run against a live server by tests/integration/bundle_test.sh.
# Usage: dockerfile_check.sh REPO_ROOT MOE_SERVER_BINARY
set -uo pipefail
root=${1:?usage: dockerfile_check.sh REPO_ROOT MOE_SERVER_BINARY}
server=${2:?usage: dockerfile_check.sh REPO_ROOT MOE_SERVER_BINARY}
df=$root/deploy/docker/Dockerfile
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# Instructions with continuation lines joined, comments dropped.
instructions=$(sed -e '/^[[:space:]]*#/d' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')
stage_of() {  # the instructions of stage N (1-based)
  awk -v n="$1" '/^FROM / { s++ } s == n' <<<"$instructions"
}

froms=$(grep -c '^FROM ' <<<"$instructions")
[ "$froms" -eq 2 ] || fail "expected 2 stages, found $froms"
build_from=$(grep '^FROM ' <<<"$instructions" | sed -n 1p)
run_from=$(grep '^FROM ' <<<"$instructions" | sed -n 2p)
[[ $build_from =~ ^FROM\ nvidia/cuda:(\$\{CUDA_VERSION\})-devel-(\$\{UBUNTU\})\ AS\ build$ ]] ||
  fail "build stage is not the CUDA devel image: $build_from"
[[ $run_from =~ ^FROM\ nvidia/cuda:(\$\{CUDA_VERSION\})-runtime-(\$\{UBUNTU\}) ]] ||
  fail "final stage is not the matching CUDA runtime image: $run_from"
for arg in CUDA_VERSION UBUNTU; do
  grep -q "^ARG $arg=" <<<"$instructions" || fail "no default for ARG $arg"
done

build=$(stage_of 1)
final=$(stage_of 2)
# Build stage: the files it copies first exist; the CMake options exist; the bundle name.
while read -r src; do
  [ -e "$root/$src" ] || fail "the build stage copies $src, which does not exist"
done < <(awk '$1 == "COPY" && $2 != "." && $2 !~ /^--/ { print $2 }' <<<"$build")
grep -q 'scripts/install_deps.sh' <<<"$build" || fail "the build stage does not run install_deps.sh"
for opt in $(grep -o -- '-D[A-Z_]*=' <<<"$build" | sed 's/^-D//; s/=$//' | sort -u); do
  case $opt in CMAKE_*) continue ;; esac
  grep -q "option($opt \|set($opt \|$opt " "$root/CMakeLists.txt" "$root"/cmake/*.cmake ||
    fail "the build stage sets -D$opt, which no CMake file defines"
done
grep -q 'MOE_WITH_CUDA=ON' <<<"$build" || fail "the image is not built with MOE_WITH_CUDA=ON"
grep -q 'deploy/make_bundle.sh build /out' <<<"$build" || fail "the build stage does not make the bundle"
bundle_glob=$(grep -o 'moe-serve-\*-linux-x86_64.tar.gz' <<<"$build")
grep -q 'name="moe-serve-${version:-dev}-linux-x86_64"' "$root/deploy/make_bundle.sh" ||
  fail "make_bundle.sh no longer names its tarball moe-serve-<version>-linux-x86_64"
[ -n "$bundle_glob" ] || fail "the build stage does not unpack moe-serve-*-linux-x86_64.tar.gz"

# Final stage: copies only from the build stage, user, volume, ports, health, entry point.
awk '$1 == "COPY" && $2 != "--from=build" { bad = 1 } END { exit bad }' <<<"$final" ||
  fail "the final stage copies from somewhere other than the build stage"
user=$(awk '$1 == "USER" { u = $2 } END { print u }' <<<"$final")
case ${user%%:*} in
  "" | root | 0) fail "the final stage runs as root (USER '$user')" ;;
esac
grep -q '^VOLUME \["/models"\]' <<<"$final" || fail "no VOLUME /models"
help=$("$server" --help) || fail "$server --help failed"
# The default of a flag: CLI11 2.3 prints `--grpc-port INT:in [0, 65535]=50051` (the
# range from base/cli_checks.h), CLI11 2.4 `--grpc-port INT:in [0, 65535] [50051]`; drop
# the range (either bracket, `, ` or CLI11's own ` - `), take the number.
flag_default() {
  grep -- "--$1 " <<<"$help" | sed -E 's/[[(]-?[0-9]+(, | - )[0-9]+[])]//' |
    grep -oE '(=|\[)[0-9]+' | head -1 | tr -d '=['
}
grpc_port=$(flag_default grpc-port)
http_port=$(flag_default http-port)
[ -n "$grpc_port" ] && [ -n "$http_port" ] || fail "no port defaults in moe-server --help"
expose=" $(awk '$1 == "EXPOSE" { $1 = ""; print }' <<<"$final" | xargs) "
for p in "$grpc_port" "$http_port"; do
  [[ $expose == *" $p "* ]] || fail "EXPOSE '$expose' lacks moe-server's default port $p"
done
health=$(grep '^HEALTHCHECK ' <<<"$final")
[ -n "$health" ] || fail "no HEALTHCHECK"
[[ $health == *"--start-period="* ]] || fail "the HEALTHCHECK has no start period for model load"
[[ $health == *"/$http_port"* && $health == *"GET /health"* ]] ||
  fail "the HEALTHCHECK does not ask GET /health on port $http_port"
grep -q '^ENTRYPOINT \["moe-server"' <<<"$final" || fail "the entry point is not moe-server"
grep -q '^ENV PATH=/opt/moe-serve/bin' <<<"$final" || fail "the bundle's bin/ is not on PATH"

if [ "$failures" -ne 0 ]; then
  echo "dockerfile_check: $failures failure(s)"
  exit 1
fi
echo "dockerfile_check: deploy/docker/Dockerfile passes (stages, user, volume, ports $grpc_port/$http_port, HEALTHCHECK, entry point)"
