#!/usr/bin/env bash
# Packs moe-server, moe-client and moe-generate with every shared library they need that
# is not part of the C runtime (glibc) into one tarball that runs from any directory:
#
#   moe-serve-<version>-linux-x86_64/
#     BUNDLE     what it is and what it needs (the minimum glibc)
#     bin/       the binaries, linked with RPATH $ORIGIN/../lib (CMakeLists.txt)
#     lib/       gRPC, Protobuf, Abseil, prometheus-cpp, ...; libmoe_cuda_backend.so in a
#                CUDA build
#     share/moe-serve/models/default   the default model
#
# CUDA libraries are never bundled: a CUDA build needs the machine's driver, CUDA runtime
# and cuBLAS (the toolkit's, or the nvidia-cuda-runtime and nvidia-cublas wheels' on
# LD_LIBRARY_PATH) for --device cuda; on the CPU it needs none of them.
# Usage: deploy/make_bundle.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?usage: make_bundle.sh BUILD_DIR OUT_DIR}
out=${2:?usage: make_bundle.sh BUILD_DIR OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^project(moe_serve LANGUAGES .* VERSION \([0-9.]*\)).*/\1/p' "$root/CMakeLists.txt")
name="moe-serve-${version:-dev}-linux-x86_64"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir/bin" "$dir/lib" "$dir/share/moe-serve/models"

binaries=("$build/server/moe-server" "$build/server/moe-generate" "$build/client/moe-client")
for b in "${binaries[@]}"; do
  [ -x "$b" ] || { echo "make_bundle: $b is not built" >&2; exit 1; }
  cp "$b" "$dir/bin/"
done

# A CUDA build's backend library, which the binaries open at run time for --device cuda
# (engine/model.cc looks for it in lib/ beside bin/); its own libraries join the closure.
closure=("${binaries[@]}")
cuda_backend="$build/engine/cuda/libmoe_cuda_backend.so"
if [ -f "$cuda_backend" ]; then
  cp "$cuda_backend" "$dir/lib/"
  closure+=("$cuda_backend")
fi

# The C runtime every Linux has, and the CUDA driver/runtime the machine must provide.
system_lib() {
  case "$1" in
    linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*| \
    libresolv.so.*|libutil.so.*|libcuda.so.*|libcudart.so.*|libcublas*.so.*|libnvidia*) return 0 ;;
  esac
  return 1
}

# Every library the binaries need, directly or not (ldd resolves the whole closure).
for b in "${closure[@]}"; do
  ldd "$b" | awk '/=>/ { print $1, $3 }'
done | sort -u | while read -r soname path; do
  system_lib "$soname" && continue
  [ -f "$path" ] || { echo "make_bundle: $soname not found (ldd: $path)" >&2; exit 1; }
  cp -L "$path" "$dir/lib/$soname"
done

for f in "$dir"/bin/*; do
  # grep reads readelf's whole output: under pipefail, grep -q exiting at the first match
  # could leave readelf killed by SIGPIPE and fail a binary that has the RPATH.
  dyn=$(readelf -d "$f")
  grep -q 'RPATH.*\$ORIGIN/../lib' <<<"$dyn" ||
    { echo "make_bundle: $f has no RPATH \$ORIGIN/../lib (rebuild with this CMakeLists.txt)" >&2; exit 1; }
done
cp -r "$root/models/default" "$dir/share/moe-serve/models/"

# The C runtime is not bundled, so the bundle needs a glibc at least as new as the newest
# symbol version any of its files asks for: the build machine's, in practice.
glibc_min=$(for f in "$dir"/bin/* "$dir"/lib/*; do objdump -T "$f"; done 2>/dev/null |
  grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
[ -n "$glibc_min" ] || { echo "make_bundle: no GLIBC symbol versions found (objdump)" >&2; exit 1; }
{
  echo "moe-serve ${version:-dev} linux-x86_64"
  echo "built on: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "requires: glibc >= $glibc_min, x86-64; for a CUDA build also the NVIDIA driver and"
  echo "          the CUDA runtime and cuBLAS of the toolkit it was built with"
  echo "libraries: $(cd "$dir/lib" && ls | tr '\n' ' ')"
} >"$dir/BUNDLE"

mkdir -p "$out"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
