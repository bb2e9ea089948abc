// Sampling on the device (kernels::SampleParams): one block per row. The cuts (top-k, then
// top-p) are found by bisection over the order of the tempered logits (32 counting passes
// each, exact), the weights e^(z - max) and their sums in double as the CPU reference
// (kernels/cpu/ops.cc) computes them, and the draw walks the kept entries in index order:
// each thread sums a contiguous chunk, a scan over the threads finds the chunk holding
// u * sum, and its thread walks it.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ inline uint32_t Key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p) {
  __shared__ double dscratch[kThreads / 32];
  __shared__ float fscratch[kThreads / 32];
  __shared__ int iscratch[kThreads / 32];
  __shared__ double chunk_sum[kThreads];
  const int r = blockIdx.x;
  const float* x = p.x + static_cast<int64_t>(r) * p.n;
  const int64_t n = p.n;
  const float t = p.temperature[r];
  if (!(t >= 1e-5f)) {
    // Greedy: the lowest index of the largest value.
    float best = -INFINITY;
    int best_i = INT_MAX;
    for (int64_t i = threadIdx.x; i < n; i += kThreads)
      Better(x[i], static_cast<int>(i), best, best_i);
    const int pick = BlockArgMax<kThreads>(best, best_i, fscratch, iscratch);
    if (threadIdx.x == 0) p.ids[r] = pick == INT_MAX ? 0 : pick;  // a row of NaNs: 0
    return;
  }
  const float inv_t = 1.f / t;
  float local_max = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) local_max = fmaxf(local_max, x[i] * inv_t);
  const float zmax = BlockMax<kThreads>(local_max, fscratch);

  uint32_t floor_key = 0;
  const int32_t k = p.top_k[r];
  if (k > 0 && k < n) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t candidate = floor_key | (1u << bit);
      int count = 0;
      for (int64_t i = threadIdx.x; i < n; i += kThreads) count += Key(x[i] * inv_t) >= candidate;
      if (BlockSum<kThreads>(count, iscratch) >= k) floor_key = candidate;
    }
  }
  auto weight = [&](int64_t i, uint32_t floor) -> double {
    const float z = x[i] * inv_t;
    return Key(z) >= floor ? exp(static_cast<double>(z - zmax)) : 0.0;
  };
  if (p.top_p[r] < 1.f) {
    double local = 0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) local += weight(i, floor_key);
    const double target = p.top_p[r] * BlockSum<kThreads>(local, dscratch);
    uint32_t cut = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t candidate = cut | (1u << bit);
      const uint32_t floor = max(candidate, floor_key);
      double mass = 0;
      for (int64_t i = threadIdx.x; i < n; i += kThreads) mass += weight(i, floor);
      if (BlockSum<kThreads>(mass, dscratch) >= target) cut = candidate;
    }
    floor_key = max(floor_key, cut);
  }

  // The draw, in index order: thread j owns [j * chunk, (j + 1) * chunk).
  const int64_t chunk = (n + kThreads - 1) / kThreads;
  const int64_t begin = threadIdx.x * chunk, end = min(n, begin + chunk);
  double mine = 0;
  int last = -1;
  for (int64_t i = begin; i < end; ++i) {
    const double w = weight(i, floor_key);
    mine += w;
    if (w > 0) last = static_cast<int>(i);
  }
  chunk_sum[threadIdx.x] = mine;
  int last_kept = last;
  for (int offset = 16; offset > 0; offset /= 2) {
    last_kept = max(last_kept, __shfl_down_sync(0xffffffffu, last_kept, offset));
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) iscratch[threadIdx.x / 32] = last_kept;
  __syncthreads();
  __shared__ double target;
  __shared__ int owner;
  __shared__ double before;
  if (threadIdx.x == 0) {
    double sum = 0;
    for (int j = 0; j < kThreads; ++j) sum += chunk_sum[j];
    target = p.uniform[r] * sum;
    owner = -1;
    double run = 0;
    for (int j = 0; j < kThreads; ++j) {
      if (run + chunk_sum[j] > target && chunk_sum[j] > 0) {
        owner = j;
        before = run;
        break;
      }
      run += chunk_sum[j];
    }
    if (owner < 0) {  // rounding left no chunk past the target: the last kept entry
      int overall = 0;
      for (int w = 0; w < kThreads / 32; ++w) overall = max(overall, iscratch[w]);
      p.ids[r] = overall;
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) == owner) {
    double run = before;
    int pick = last;
    for (int64_t i = begin; i < end; ++i) {
      const double w = weight(i, floor_key);
      if (w == 0.0) continue;
      run += w;
      if (run > target) {
        pick = static_cast<int>(i);
        break;
      }
    }
    p.ids[r] = pick;
  }
}

__device__ inline bool IsEos(const SelfContrastRowsParams& p, int64_t v) {
  for (int i = 0; i < p.num_eos; ++i) {
    if (p.eos_ids[i] == v) return true;
  }
  return false;
}

// One block per pair: the strong row's max (and, with ban_eos, its best non-EOS token),
// then the scores in place, then the fallback.
__global__ void __launch_bounds__(kThreads) SelfContrastRowsKernel(SelfContrastRowsParams p) {
  __shared__ float fscratch[kThreads / 32];
  __shared__ int iscratch[kThreads / 32];
  const int i = blockIdx.x;
  float* row = p.x + static_cast<int64_t>(p.strong_row[i]) * p.n;
  const float* weak = p.x + static_cast<int64_t>(p.weak_row[i]) * p.n;
  const float inv_t = p.inv_temperature[i];
  const bool ban = p.ban_eos[i] != 0;
  float local = -INFINITY, best_v = -INFINITY;
  int best = INT_MAX;
  for (int64_t v = threadIdx.x; v < p.n; v += kThreads) {
    local = fmaxf(local, row[v] * inv_t);
    if (ban && !IsEos(p, v) && (best == INT_MAX || row[v] > best_v)) {
      best_v = row[v];
      best = static_cast<int>(v);
    }
  }
  const float max_s = BlockMax<kThreads>(local, fscratch);
  // The best non-EOS raw logit, lowest id among equals (as the CPU's first-max scan).
  const int best_all = BlockArgMax<kThreads>(best_v, best, fscratch, iscratch);
  const float best_s = best_all != INT_MAX ? row[best_all] * inv_t : -INFINITY;
  __syncthreads();  // every thread has read row[best_all] before the row is overwritten
  const float cutoff = p.log_alpha[i] + max_s;
  const float keep = 1.f + p.beta[i];
  int any = 0;
  for (int64_t v = threadIdx.x; v < p.n; v += kThreads) {
    const float s_v = row[v] * inv_t;
    float score = s_v >= cutoff ? __fsub_rn(__fmul_rn(keep, s_v),
                                            __fmul_rn(p.beta[i], __fmul_rn(weak[v], inv_t)))
                                : -INFINITY;
    if (ban && IsEos(p, v)) score = -INFINITY;
    any |= ban && score != -INFINITY;
    row[v] = score;
  }
  if (ban && BlockSum<kThreads>(any, iscratch) == 0 && best_all != INT_MAX && threadIdx.x == 0) {
    row[best_all] = best_s;
  }
}

}  // namespace

absl::Status CanImplement(const SelfContrastRowsParams& p) { return cpu::CanImplement(p); }

absl::Status LaunchSelfContrastRows(const SelfContrastRowsParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.pairs == 0) return absl::OkStatus();
  SelfContrastRowsKernel<<<p.pairs, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

absl::Status CanImplement(const SampleParams& p) { return cpu::CanImplement(p); }

absl::Status LaunchSample(const SampleParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  SampleKernel<<<p.rows, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
