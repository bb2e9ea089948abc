// The machine's own limits, measured in the same run as the figures compared with them
// (bench/RESULTS.md): read bandwidth with every kernel thread, and the FLOP rate of a
// large square GEMM with the project's own CPU GEMM (kernels/cpu/gemm.h) for a dtype.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "kernels/params.h"

namespace moe::bench {

// Bytes per second that the kernels' threads read from a buffer of `bytes` (1 GiB by
// default) they share, passing over it again and again for at least `seconds`.
// `sustained` is all bytes over all that time; `best_pass` the fastest single pass. On the
// project's VM the two differ: after an idle spell the first passes run near 50 GB/s, then
// the host holds reads near 32 GB/s (bench/RESULTS.md), so figures are compared with the
// sustained rate measured right before and after them.
struct Bandwidth {
  double sustained = 0;
  double best_pass = 0;
};
Bandwidth ReadBandwidth(double seconds = 2.0, size_t bytes = size_t{1} << 30);

// The same over given regions of memory (a model's weights: the memory a decode step
// really reads), split between the threads by bytes. Regions are read as floats; each
// is rounded down to a multiple of 256 bytes.
Bandwidth ReadBandwidthOf(const std::vector<std::pair<const void*, size_t>>& regions,
                          double seconds = 2.0);

// FLOP/s of y[n, n] = x[n, n] W[n, n]^T with W packed in `dtype`, best of `repeats`.
double GemmRate(kernels::DType dtype, int n = 2048, int repeats = 3);

// "AMD EPYC, avx512, 2 threads": the CPU model, the kernels' instruction set, threads.
std::string MachineDescription();

}  // namespace moe::bench
