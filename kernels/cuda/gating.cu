// Fused routing: softmax -> top-k -> renormalise (or SCMoE rank-r), one warp per token.
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

  const int rank = p.weak_rank != nullptr ? p.weak_rank[t] : 0;
  const int needed = rank > 0 ? min(rank, E) : K;
  int32_t* ids = p.topk_ids + static_cast<size_t>(t) * K;
  float* w = p.topk_weights + static_cast<size_t>(t) * K;
  float wsum = 0.f;  // same value in every lane
  int chosen = -1;
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
    chosen = best_index;
    if (rank == 0) {
      if (lane == 0) {
        ids[j] = best_index;
        w[j] = best;
      }
      wsum += best;
    }
    if (best_index < E && lane == best_index % kWarpSize) prob[best_index] = kTaken;
    __syncwarp();
  }

  if (rank > 0) {
    for (int j = lane; j < K; j += kWarpSize) {
      ids[j] = j == 0 ? chosen : -1;
      w[j] = j == 0 ? 1.f : 0.f;
    }
    return;
  }
  if (p.renormalize) {
    __syncwarp();  // lane 0's weights are visible to the warp
    for (int j = lane; j < K; j += kWarpSize) w[j] = w[j] / wsum;
  }
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
  // T*K and T*E index with size_t; the grid's x dimension holds ceil(T / 4).
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
