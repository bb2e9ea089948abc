#include "kernels/cpu/parallel.h"

#include <omp.h>

#include <algorithm>

namespace moe::kernels::cpu {

int NumThreads() { return omp_get_max_threads(); }

void SetNumThreads(int n) { omp_set_num_threads(std::max(1, n)); }

void ReleaseThreads() { omp_pause_resource_all(omp_pause_soft); }

void ParallelTasks(int n, absl::FunctionRef<void(int)> task) {
  if (n <= 0) return;
  if (n == 1 || NumThreads() == 1) {
    for (int i = 0; i < n; ++i) task(i);
    return;
  }
  const int threads = std::min(n, NumThreads());
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int i = 0; i < n; ++i) task(i);
}

void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int chunks = static_cast<int>(std::min<int64_t>(NumThreads(), (n + grain - 1) / grain));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  ParallelTasks(chunks, [&](int c) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace moe::kernels::cpu
