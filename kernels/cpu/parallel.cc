#include "kernels/cpu/parallel.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::kernels::cpu {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int DefaultThreads() {
  for (const char* name : {"MOE_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// One pool for the process. A call publishes a job; the caller and every worker that is
// awake claim its tasks from one counter until none is left; the caller then waits only
// for the workers that claimed a task. A worker that the operating system has descheduled
// (on a small machine the front ends' and clients' threads share the cores) therefore
// never holds a call up: its share is taken by whoever runs. Which thread runs a task
// never changes what the task computes.
class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool(DefaultThreads());  // never destroyed: workers may outlive main
    return *pool;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }

  void Resize(int n) {
    std::lock_guard<std::mutex> lock(call_mu_);
    Stop();
    threads_.store(std::max(1, n), std::memory_order_relaxed);
    Start();
  }

  void Run(int n, absl::FunctionRef<void(int)> task) {
    std::unique_lock<std::mutex> lock(call_mu_, std::try_to_lock);
    if (!lock.owns_lock() || workers_.empty()) {  // nested, concurrent, or one thread
      for (int i = 0; i < n; ++i) task(i);
      return;
    }
    // No worker is inside the previous job any more (the last call waited for them), so
    // its fields may be written; workers read them only after seeing the new generation.
    task_ = &task;
    num_tasks_ = n;
    next_.store(0, std::memory_order_relaxed);
    const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
    generation_.store(gen, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
    for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n;) task(i);
    done_.store(gen, std::memory_order_seq_cst);
    // A worker still inside has a task running; if it was descheduled (from this core),
    // yield so it gets to finish.
    for (int spin = 0; active_.load(std::memory_order_seq_cst) != 0; ++spin) {
      if (spin < 2000) {
        CpuRelax();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  explicit Pool(int n) : threads_(std::max(1, n)) { Start(); }

  void Start() {
    stop_.store(false);
    // The generation a worker starts from is read here, not when it first runs: a Stop()
    // that comes before the new thread runs must still be a change it sees.
    const uint64_t gen = generation_.load();
    for (int t = 1; t < threads_.load(); ++t) workers_.emplace_back([this, gen] { Work(gen); });
  }

  void Stop() {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (std::thread& w : workers_) w.join();
    workers_.clear();
  }

  void Work(uint64_t seen) {
    while (true) {
      // Spin a while (the next call of a step comes within microseconds), then sleep.
      uint64_t gen = generation_.load(std::memory_order_seq_cst);
      for (int spin = 0; gen == seen && spin < kSpins; ++spin) {
        CpuRelax();
        gen = generation_.load(std::memory_order_seq_cst);
      }
      if (gen == seen) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        gen = generation_.load(std::memory_order_seq_cst);
        while (gen == seen) {
          generation_.wait(seen, std::memory_order_seq_cst);
          gen = generation_.load(std::memory_order_seq_cst);
        }
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      seen = gen;
      if (stop_.load()) return;
      active_.fetch_add(1, std::memory_order_seq_cst);
      // Join only a job that is current and not finished; its fields are then stable.
      if (generation_.load(std::memory_order_seq_cst) == gen &&
          done_.load(std::memory_order_seq_cst) != gen) {
        const absl::FunctionRef<void(int)>& task = *task_;
        const int n = num_tasks_;
        for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n;) task(i);
      }
      active_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  // About 50 to 100 microseconds of pause instructions.
  static constexpr int kSpins = 20000;

  std::atomic<int> threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one call at a time; others run inline

  std::atomic<uint64_t> generation_{0};  // bumped per job (and to stop)
  std::atomic<uint64_t> done_{0};        // the last job whose tasks all ran
  std::atomic<int> next_{0};             // next task to claim
  std::atomic<int> active_{0};           // workers inside a job
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  const absl::FunctionRef<void(int)>* task_ = nullptr;
  int num_tasks_ = 0;
};

}  // namespace

int NumThreads() { return Pool::Get().threads(); }

void SetNumThreads(int n) {
  if (n != NumThreads()) Pool::Get().Resize(n);
}

void ParallelTasks(int n, absl::FunctionRef<void(int)> task) {
  if (n <= 0) return;
  if (n == 1 || NumThreads() == 1) {
    for (int i = 0; i < n; ++i) task(i);
    return;
  }
  Pool::Get().Run(n, task);
}

void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // A few chunks per thread, so that a thread that runs late leaves its chunks to others.
  const int chunks = static_cast<int>(std::min<int64_t>(4 * NumThreads(), (n + grain - 1) / grain));
  if (chunks <= 1 || NumThreads() == 1) {
    fn(0, n);
    return;
  }
  ParallelTasks(chunks, [&](int c) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace moe::kernels::cpu
