// The kernels' thread pool (kernels/cpu/parallel.h): every task runs exactly once per call,
// with the caller's writes visible after it; calls from two threads at once, calls from
// inside a task, and resizing between calls neither lose tasks nor hang.
#include "kernels/cpu/parallel.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace moe::kernels::cpu {
namespace {

TEST(ParallelTest, EveryTaskRunsOnceAndItsWritesAreVisible) {
  for (int n : {1, 2, 3, 7, 64, 1000}) {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<int> hits(n, 0);  // plain ints: the pool must publish them
      ParallelTasks(n, [&](int i) { hits[i] += 1; });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " task " << i;
    }
  }
}

TEST(ParallelTest, ParallelForCoversTheRangeOnce) {
  for (int64_t n : {1, 5, 100, 12345}) {
    std::vector<std::atomic<int>> hits(n);
    ParallelFor(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i " << i;
  }
}

TEST(ParallelTest, ConcurrentAndNestedCallsComplete) {
  std::atomic<int64_t> total{0};
  auto hammer = [&] {
    for (int rep = 0; rep < 500; ++rep) {
      ParallelTasks(8, [&](int) {
        ParallelTasks(3, [&](int) { total.fetch_add(1); });  // nested: runs inline
      });
    }
  };
  std::thread other(hammer);
  hammer();
  other.join();
  EXPECT_EQ(total.load(), 2 * 500 * 8 * 3);
}

TEST(ParallelTest, ResizingBetweenCallsKeepsWorking) {
  const int threads = NumThreads();
  for (int rep = 0; rep < 50; ++rep) {
    SetNumThreads(1 + rep % 3);
    EXPECT_EQ(NumThreads(), 1 + rep % 3);
    std::atomic<int> count{0};
    ParallelTasks(17, [&](int) { count.fetch_add(1); });
    EXPECT_EQ(count.load(), 17);
  }
  SetNumThreads(threads);
}

}  // namespace
}  // namespace moe::kernels::cpu
