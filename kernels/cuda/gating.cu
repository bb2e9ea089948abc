// Fused routing: softmax -> top-k -> renormalise (or the per-token SCMoE rank-r, top-k or
// top-p override), one warp per token.
// Mirrors kernels::cpu::Gating (kernels/cpu/moe.cc) operation by operation: fp32 softmax with
// the max subtracted and a division by the sum, top-k by descending probability with ties
// to the lower expert id, renormalisation by the sum of the k weights in slot order.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 4;
// Selected experts are overwritten with this value; probabilities are >= 0.
constexpr float kTaken = -1.f;

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// Butterfly arg-max: every lane ends with the largest value and, among equal values, the
// lowest index, so all lanes agree.
__device__ __forceinline__ void WarpArgMax(float& value, int& index) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float other_value = __shfl_xor_sync(kFullMask, value, offset);
    const int other_index = __shfl_xor_sync(kFullMask, index, offset);
    if (other_value > value || (other_value == value && other_index < index)) {
      value = other_value;
      index = other_index;
    }
  }
}

// Dynamic shared memory: kWarpsPerBlock * E floats, one probability row per warp.
__global__ void SoftmaxTopKKernel(GatingParams p) {
  extern __shared__ float shared_prob[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int t = blockIdx.x * kWarpsPerBlock + warp;
  if (t >= p.num_tokens) return;  // warp-uniform
  const int E = p.num_experts;
  const int K = p.top_k;
  float* prob = shared_prob + warp * E;
  const float* z = p.router_logits + static_cast<size_t>(t) * E;

  float zmax = -INFINITY;
  for (int e = lane; e < E; e += kWarpSize) zmax = fmaxf(zmax, z[e]);
  zmax = WarpMax(zmax);
  float sum = 0.f;
  for (int e = lane; e < E; e += kWarpSize) {
    const float v = expf(z[e] - zmax);
    prob[e] = v;
    sum += v;
  }
  sum = WarpSum(sum);
  for (int e = lane; e < E; e += kWarpSize) prob[e] = prob[e] / sum;
  __syncwarp();

  // The overrides as kernels::cpu::Gating reads them: weak_rank, then top_k, then top_p.
  const int S = p.slots > 0 ? p.slots : K;
  const int rank = p.weak_rank != nullptr ? min(p.weak_rank[t], E) : 0;
  const int top_k = rank > 0 || p.route_top_k == nullptr ? 0 : p.route_top_k[t];
  const float top_p = rank > 0 || top_k > 0 || p.route_top_p == nullptr ? 0.f : p.route_top_p[t];
  const int needed = rank > 0 ? rank : top_k > 0 ? top_k : top_p > 0.f ? E : K;
  int32_t* ids = p.topk_ids + static_cast<size_t>(t) * S;
  float* w = p.topk_weights + static_cast<size_t>(t) * S;
  for (int j = lane; j < S; j += kWarpSize) {
    ids[j] = -1;
    w[j] = 0.f;
  }
  __syncwarp();
  float wsum = 0.f;  // same value in every lane: the weights in slot order
  int count = 0;
  for (int j = 0; j < needed; ++j) {
    float best = kTaken;
    int best_index = INT_MAX;
    // Ascending e with a strict '>' keeps the lowest index among a lane's equal values.
    for (int e = lane; e < E; e += kWarpSize) {
      const float v = prob[e];
      if (v > best) {
        best = v;
        best_index = e;
      }
    }
    WarpArgMax(best, best_index);
    if (rank > 0) {
      // SCMoE rank-r weak routing: only the r-th; renormalized over itself it weighs 1.
      if (j == rank - 1 && lane == 0) {
        ids[0] = best_index;
        w[0] = p.renormalize ? 1.f : best;
      }
    } else {
      if (lane == 0) {
        ids[j] = best_index;
        w[j] = best;
      }
      wsum += best;
      count = j + 1;
    }
    if (best_index < E && lane == best_index % kWarpSize) prob[best_index] = kTaken;
    __syncwarp();
    // top-p: stop at the first rank whose cumulative mass exceeds P (none: all E).
    if (rank == 0 && top_p > 0.f && wsum > top_p) break;  // warp-uniform
  }
  if (rank > 0 || top_p > 0.f || !p.renormalize) return;  // top-p keeps raw probabilities
  __syncwarp();  // lane 0's weights are visible to the warp
  for (int j = lane; j < count; j += kWarpSize) w[j] = w[j] / wsum;
}

}  // namespace

absl::Status CanImplement(const GatingParams& p) {
  if (p.rule != RoutingRule::kSoftmaxTopK) {
    return absl::UnimplementedError("gating: only RoutingRule::kSoftmaxTopK");
  }
  if (p.router_logits == nullptr || p.topk_ids == nullptr || p.topk_weights == nullptr) {
    return absl::InvalidArgumentError("gating: null buffer");
  }
  if (p.num_tokens < 0 || p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: E=%d outside [1, %d]", p.num_experts, kMaxExperts));
  }
  if (p.top_k < 1 || p.top_k > p.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: K=%d outside [1, E=%d]", p.top_k, p.num_experts));
  }
  if (p.slots != 0 && (p.slots < p.top_k || p.slots > p.num_experts)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: slots=%d outside [K=%d, E=%d]", p.slots, p.top_k, p.num_experts));
  }
  // The per-token overrides are in device memory: the caller sizes `slots` for them (the
  // CPU kernel checks each row). T*K and T*E index with size_t; the grid's x dimension
  // holds ceil(T / 4).
  return absl::OkStatus();
}

absl::Status LaunchGating(const GatingParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  const int blocks = (p.num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const size_t shared_bytes = sizeof(float) * kWarpsPerBlock * p.num_experts;  // <= 16 KiB
  SoftmaxTopKKernel<<<blocks, kWarpsPerBlock * kWarpSize, shared_bytes, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
