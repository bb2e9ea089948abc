#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs from a CUDA build made here into .gpu/ (ignored by
# git), for a device machine that cannot build the project (its image has no gRPC or
# Abseil development packages): the build tree's executables, shared libraries and
# CTestTestfile.cmake files and every non-system library they load (as .gpu/lib/), in one
# .gpu/build.tar.xz. The device tool carries the working tree plus `.gpu` (64 MiB in all).
# On the device, one command (the build's absolute paths, /work/main, are linked there):
#   bash scripts/gpu_pack.sh --unpack && OUT=$OUT bash scripts/gpu_check.sh
# With VLLM=1 it also downloads vLLM's wheel from PyPI (pip download, no install) and cuts
# its fused_moe Triton kernel and H200 configs into .gpu/vllm/ for the comparison
# (tools/vllm_fused_moe_bench.py; never committed).
# Usage: scripts/gpu_pack.sh [BUILD_DIR]      (default build)
#        scripts/gpu_pack.sh --unpack         (on the device)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "${1:-}" = --unpack ]; then
  # The build's paths (CTestTestfile.cmake, MOE_SOURCE_DIR) are absolute: link the one they
  # name to this checkout when it is elsewhere.
  built_at=$(cat .gpu/BUILT_AT)
  if [ "$built_at" != "$root" ]; then
    if [ -e "$built_at" ] && [ ! -L "$built_at" ]; then
      echo "gpu_pack: $built_at exists and is not this checkout; unpack there instead" >&2
      exit 1
    fi
    mkdir -p "$(dirname "$built_at")"
    ln -sfn "$root" "$built_at"
  fi
  tar -xJf .gpu/build.tar.xz
  # .gpu/lib is not made system-wide (its libstdc++ could shadow the image's for Python):
  # scripts/gpu_check.sh puts it on LD_LIBRARY_PATH for the project's binaries only.
  exit 0
fi

build=${1:-build}
[ -x "$build/engine/cuda/libmoe_cuda_backend.so" ] || [ -f "$build/engine/cuda/libmoe_cuda_backend.so" ] ||
  { echo "gpu_pack: $build has no CUDA backend (configure with -DMOE_WITH_CUDA=ON)" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu
mkdir -p .gpu/lib
echo "$root" > .gpu/BUILT_AT
mapfile -t files < <(find "$build" -type f \( -perm -u+x -o -name '*.so' -o -name CTestTestfile.cmake \) \
  -not -path '*/CMakeFiles/*' -not -name '*.sh' | sort)

# The libraries the device image lacks: every one the executables load but the C
# runtime and the CUDA driver, runtime and cuBLAS (the image has those).
for f in "${files[@]}"; do
  case "$f" in *CTestTestfile.cmake) continue ;; esac
  ldd "$f" 2>/dev/null | awk '/=>/ { print $1, $3 }'
done | sort -u | while read -r soname path; do
  case "$soname" in
    linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*| \
    libresolv.so.*|libutil.so.*|libgcc_s.so.*|libcuda.so.*|libcudart.so.*|libcublas*.so.*| \
    libnvidia*|libmoe_cuda_backend.so) continue ;;
  esac
  [ -f "$path" ] && cp -L "$path" .gpu/lib/
done
tar -cJf .gpu/build.tar.xz "${files[@]}" .gpu/lib
rm -rf .gpu/lib
if [ "${VLLM:-0}" = 1 ]; then
  wheels=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: "vllm==${VLLM_VERSION:-0.9.2}" -d "$wheels"
  python3 tools/vllm_fused_moe_bench.py --extract "$wheels"/vllm-*.whl .gpu/vllm
  rm -rf "$wheels"
fi
du -sh .gpu/build.tar.xz
total=$(du -sb .gpu | cut -f1)
echo "gpu_pack: .gpu is $((total / 1048576)) MiB (the working tree adds its own; 64 MiB in all)"
