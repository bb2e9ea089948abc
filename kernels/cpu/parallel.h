// The CPU kernels' threads: a thin layer over OpenMP (GCC's libgomp), so no kernel header
// needs OpenMP. The calling thread takes part; between calls the workers spin briefly and
// then sleep (libgomp's default policy), which suits an engine step's many short calls.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace moe::kernels::cpu {

// Threads the kernels use: $OMP_NUM_THREADS, else one per online CPU.
int NumThreads();
// For tests and benchmarks; n >= 1.
void SetNumThreads(int n);

// Ends the calling thread's workers (they start again at its next parallel call). Call it
// on a thread that is done with kernels while another thread goes on with them (the
// loader's thread, once the weights are in): libgomp counts the idle workers of every
// thread's pool, and with more threads than CPUs it stops spinning between parallel
// calls and sleeps in the kernel instead, which halved moe-server's decode speed.
void ReleaseThreads();

// Runs task(i) for i in [0, n), spread over the threads (task i on thread i % threads when
// n > threads). Returns when all are done. n <= 1 runs on the calling thread.
void ParallelTasks(int n, absl::FunctionRef<void(int)> task);

// Splits [0, n) into at most NumThreads() contiguous ranges of at least `grain` items and
// runs fn(begin, end) on each in parallel.
void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace moe::kernels::cpu
