# Every dependency comes from Debian 12's packages; scripts/install_deps.sh installs them.
find_package(PkgConfig REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
# CLI11: command-line parsing with --dashed-names and generated --help.
find_package(CLI11 CONFIG REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
if(MOE_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
  include(GoogleTest)
endif()
if(MOE_BUILD_BENCH)
  find_package(benchmark CONFIG REQUIRED)
endif()
# The serving front ends (proto/, server/, tests/integration): Protobuf and gRPC (with
# health checking and reflection), Boost.Beast/Asio (headers) and OpenSSL for the HTTP
# server, prometheus-cpp for /metrics; cpp-httplib as the HTTP client of moe-client and
# the tests.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(Boost 1.81 CONFIG REQUIRED COMPONENTS headers)
find_package(OpenSSL REQUIRED)
# Debian's cpp-httplib is a compiled library configured through pkg-config.
pkg_check_modules(CPPHTTPLIB REQUIRED IMPORTED_TARGET GLOBAL cpp-httplib)
