#include "bench/bounds.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace moe::bench {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Bandwidth ReadBandwidth(double seconds, size_t bytes) {
  const size_t n = bytes / sizeof(float) / 64 * 64;
  void* mem = ::mmap(nullptr, n * sizeof(float), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return {};
  // Huge pages where the kernel gives them, as the CPU backend asks for its weights.
  ::madvise(mem, n * sizeof(float), MADV_HUGEPAGE);
  float* a = static_cast<float*>(mem);
  const int threads = kernels::cpu::NumThreads();
  auto slice = [&](int t) { return n / 64 * t / threads * 64; };
  // Each thread touches (and later reads) its own slice.
  kernels::cpu::ParallelTasks(threads, [&](int t) {
    for (size_t i = slice(t); i < slice(t + 1); ++i) a[i] = 1.f;
  });
  const kernels::cpu::IsaKernels& k = kernels::cpu::Kernels();
  std::vector<float> sums(threads);
  Bandwidth bw;
  const double start = Now();
  int passes = 0;
  do {
    const double t0 = Now();
    kernels::cpu::ParallelTasks(threads, [&](int t) {
      sums[t] = k.sum_floats(a + slice(t), static_cast<int64_t>(slice(t + 1) - slice(t)));
    });
    bw.best_pass = std::max(bw.best_pass, static_cast<double>(n * sizeof(float)) / (Now() - t0));
    ++passes;
  } while (Now() - start < seconds);
  bw.sustained = static_cast<double>(n * sizeof(float)) * passes / (Now() - start);
  volatile float sink = 0;
  for (float s : sums) sink = sink + s;
  ::munmap(mem, n * sizeof(float));
  return bw;
}

Bandwidth ReadBandwidthOf(const std::vector<std::pair<const void*, size_t>>& regions,
                          double seconds) {
  const int threads = kernels::cpu::NumThreads();
  // Thread t reads the bytes in [total * t / threads, total * (t + 1) / threads) of the
  // regions laid end to end.
  size_t total = 0;
  for (const auto& r : regions) total += r.second / 256 * 256;
  const kernels::cpu::IsaKernels& k = kernels::cpu::Kernels();
  std::vector<float> sums(threads);
  Bandwidth bw;
  const double start = Now();
  int passes = 0;
  do {
    const double t0 = Now();
    kernels::cpu::ParallelTasks(threads, [&](int t) {
      const size_t lo = total * t / threads / 256 * 256, hi = total * (t + 1) / threads / 256 * 256;
      size_t at = 0;
      float sum = 0;
      for (const auto& [data, bytes] : regions) {
        const size_t n = bytes / 256 * 256;
        const size_t b = std::max(lo, at), e = std::min(hi, at + n);
        if (b < e) {
          sum += k.sum_floats(
              reinterpret_cast<const float*>(static_cast<const char*>(data) + (b - at)),
              static_cast<int64_t>((e - b) / sizeof(float)));
        }
        at += n;
      }
      sums[t] = sum;
    });
    bw.best_pass = std::max(bw.best_pass, static_cast<double>(total) / (Now() - t0));
    ++passes;
  } while (Now() - start < seconds);
  bw.sustained = static_cast<double>(total) * passes / (Now() - start);
  volatile float sink = 0;
  for (float s : sums) sink = sink + s;
  return bw;
}

double GemmRate(kernels::DType dtype, int n, int repeats) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n) * n), x(w.size()), y(w.size());
  for (float& f : w) f = d(rng);
  for (float& f : x) f = d(rng);
  std::vector<char> packed(kernels::MatrixBytes(dtype, kernels::WeightLayout::kPanels16, n, n));
  const kernels::cpu::PackSource src{w.data(), kernels::cpu::SourceType::kF32, n};
  kernels::cpu::PackPanels(std::span(&src, 1), n, dtype, packed.data());
  kernels::LinearParams p;
  p.x = x.data();
  p.ldx = n;
  p.m = n;
  p.w = {packed.data(), dtype, kernels::WeightLayout::kPanels16, n, n};
  p.y = y.data();
  p.ldy = n;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = Now();
    kernels::cpu::Linear(p);
    best = std::max(best, 2.0 * n * n * static_cast<double>(n) / (Now() - t0));
  }
  return best;
}

std::string MachineDescription() {
  return absl::StrCat(kernels::cpu::GetCpuFeatures().model, ", ",
                      kernels::cpu::IsaName(kernels::cpu::ActiveIsa()), ", ",
                      kernels::cpu::NumThreads(), " threads");
}

}  // namespace moe::bench
