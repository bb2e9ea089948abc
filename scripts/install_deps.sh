#!/usr/bin/env bash
# Installs the Debian 12 packages moe-serve builds against, only those missing.
# The CUDA toolkit (nvcc, cuBLAS) is optional: where nvcc is found, kernels/cuda builds.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libabsl-dev          # absl::Status, strings, containers
  libpcre2-dev         # tokenizer pre-tokenizer regexes (Unicode properties)
  libutf8proc-dev      # Unicode normalization (NFC/NFKC) for tokenizers
  nlohmann-json3-dev   # config.json, tokenizer.json, safetensors headers
  libcli11-dev         # command-line parsing
  # gRPC front end: protoc and grpc_cpp_plugin generate proto/'s C++; libgrpc++-dev
  # brings gRPC (with health checking and server reflection) and its CMake config.
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libboost1.81-dev     # Boost.Beast/Asio (headers): the HTTP server
  libcpp-httplib-dev   # the HTTP client of moe-client and the tests
  libssl-dev openssl   # HTTPS; the tests make a certificate with openssl
  prometheus-cpp-dev   # /metrics
  prometheus           # promtool, which the e2e tests run on a live /metrics scrape
  libgtest-dev libgmock-dev  # tests
  libbenchmark-dev     # bench/
  gnuplot-nox          # moe-client bench --plot (sweep PNGs)
  # tests/deploy: the Kubernetes manifests against the committed Kubernetes JSON schemas,
  # with Debian's Python (/usr/bin/python3), never packages from PyPI.
  python3 python3-yaml python3-jsonschema
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
