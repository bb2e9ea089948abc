// Block-wide reductions shared by the row kernels (argmax, sampling, SCMoE rows): every
// thread of a block of kThreads (a multiple of 32) calls them together and every thread
// gets the result. Each begins with a __syncthreads, so a scratch array may be reused by
// the next call.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>

namespace moe::kernels::cuda {

// The block's sum of v. `scratch` holds kThreads / 32 values.
template <int kThreads, typename T>
__device__ T BlockSum(T v, T* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // the scratch's previous use is over
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;
}

// The block's largest v (fmaxf: a NaN never wins over a number).
template <int kThreads>
__device__ float BlockMax(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// A thread's candidate (value, index) with the larger value, ties to the lower index; NaN
// compares false, so it never replaces a number.
__device__ inline void Better(float v, int i, float& best, int& best_i) {
  if (v > best || (v == best && i < best_i)) {
    best = v;
    best_i = i;
  }
}

// The lowest index among the threads' candidates (value, index) that hold the block's
// largest value; a thread without one passes index INT_MAX. INT_MAX when no thread has one.
template <int kThreads>
__device__ int BlockArgMax(float value, int index, float* fscratch, int* iscratch) {
  const float top = BlockMax<kThreads>(index == INT_MAX ? -INFINITY : value, fscratch);
  int mine = (index != INT_MAX && value == top) ? index : INT_MAX;
  for (int offset = 16; offset > 0; offset /= 2) {
    mine = min(mine, __shfl_down_sync(0xffffffffu, mine, offset));
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) iscratch[threadIdx.x / 32] = mine;
  __syncthreads();
  int pick = INT_MAX;
  for (int w = 0; w < kThreads / 32; ++w) pick = min(pick, iscratch[w]);
  return pick;
}

}  // namespace moe::kernels::cuda
