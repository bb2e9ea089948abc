// The CPU kernels' threads: one pool per process that any thread may call (one call at a
// time; a call made while another runs, or from inside a task, runs on its caller). The
// caller takes part; tasks are claimed from a shared counter, so a thread the operating
// system deschedules (the front ends and clients share the cores) only leaves its tasks to
// the others instead of holding every call up, as a fork-join team (OpenMP) does. Between
// calls the workers spin for about 0.1 ms, then sleep.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace moe::kernels::cpu {

// Threads the kernels use: $MOE_NUM_THREADS or $OMP_NUM_THREADS, else one per CPU this
// process may run on.
int NumThreads();
// --threads; n >= 1. Not while a call runs.
void SetNumThreads(int n);

// Runs task(i) for every i in [0, n) on the calling thread and the workers, each task
// claimed by whichever thread is free; returns when all are done. Give a few tasks per
// thread of about equal cost. n <= 1 runs on the calling thread.
void ParallelTasks(int n, absl::FunctionRef<void(int)> task);

// Splits [0, n) into up to 4 ranges per thread, of at least `grain` items, and runs
// fn(begin, end) on each through ParallelTasks.
void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace moe::kernels::cpu
