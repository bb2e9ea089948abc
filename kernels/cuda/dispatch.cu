// Dispatch: histogram per expert, exclusive scan, stable counting sort of the (token,
// slot) pairs by expert, in one thread block. The histogram uses shared-memory atomics
// (counts do not depend on their order); the placement does not: pairs are taken in
// chunks of one block, ranked inside a warp with __match_any_sync and placed warp after
// warp, so a pair's row is exactly its rank among the earlier pairs of its expert, as in
// the CPU reference kernels::Dispatch. One block is enough for decode and prefill steps
// of this server (P = T*K is at most a few tens of thousands); the cost is P / 512
// chunks of 16 barriers.
#include <cuda_runtime.h>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;

// Dynamic shared memory: cursor[E] (first the histogram, then the next free row per expert).
__global__ void __launch_bounds__(kThreads) DispatchKernel(DispatchParams p) {
  extern __shared__ int32_t cursor[];
  const int E = p.num_experts;
  const int P = p.num_tokens * p.top_k;
  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize;
  const int lane = tid % kWarpSize;

  // 1. Histogram.
  for (int e = tid; e < E; e += kThreads) cursor[e] = 0;
  __syncthreads();
  for (int i = tid; i < P; i += kThreads) {
    const int32_t e = p.topk_ids[i];
    if (e >= 0 && e < E) atomicAdd(&cursor[e], 1);
  }
  __syncthreads();

  // 2. Exclusive scan by warp 0, 32 experts at a time.
  if (warp == 0) {
    int32_t carry = 0;
    for (int base = 0; base < E; base += kWarpSize) {
      const int e = base + lane;
      const int32_t count = e < E ? cursor[e] : 0;
      int32_t inclusive = count;
      for (int offset = 1; offset < kWarpSize; offset *= 2) {
        const int32_t up = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += up;
      }
      const int32_t exclusive = carry + inclusive - count;
      if (e < E) {
        cursor[e] = exclusive;
        p.expert_offsets[e] = exclusive;
      }
      carry += __shfl_sync(kFullMask, inclusive, kWarpSize - 1);
    }
    if (lane == 0) p.expert_offsets[E] = carry;
  }
  __syncthreads();

  // 3. Stable placement, chunk by chunk in ascending pair index.
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int base = 0; base < P; base += kThreads) {
    const int i = base + tid;
    const int32_t e = i < P ? p.topk_ids[i] : -1;
    const bool used = e >= 0 && e < E;
    const int32_t key = used ? e : -1;
    const unsigned peers = __match_any_sync(kFullMask, key);
    const int rank_in_warp = __popc(peers & lanes_below);
    const bool leader = rank_in_warp == 0;
    int32_t row = -1;
    for (int w = 0; w < kWarps; ++w) {
      if (warp == w) {  // warp-uniform
        if (used) row = cursor[e] + rank_in_warp;
        __syncwarp();
        if (used && leader) cursor[e] += __popc(peers);
      }
      __syncthreads();
    }
    if (i < P) {
      p.pair_to_row[i] = row;
      if (used) p.sorted_pairs[row] = i;
    }
  }
}

}  // namespace

absl::Status CanImplement(const DispatchParams& p) {
  if (p.topk_ids == nullptr || p.expert_offsets == nullptr || p.sorted_pairs == nullptr ||
      p.pair_to_row == nullptr) {
    return absl::InvalidArgumentError("dispatch: null buffer");
  }
  if (p.num_tokens < 0 || p.top_k < 1 || p.num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("dispatch: bad shape T=%d K=%d E=%d",
                                                      p.num_tokens, p.top_k, p.num_experts));
  }
  if (p.num_experts > kMaxExperts) {
    // cursor[E] lives in shared memory.
    return absl::InvalidArgumentError(
        absl::StrFormat("dispatch: E=%d above %d", p.num_experts, kMaxExperts));
  }
  // The base + tid index of the last chunk must not overflow int32 either.
  const int64_t pairs = static_cast<int64_t>(p.num_tokens) * p.top_k;
  if (pairs > INT32_MAX - kThreads) {
    return absl::InvalidArgumentError("dispatch: T*K overflows int32");
  }
  return absl::OkStatus();
}

absl::Status LaunchDispatch(const DispatchParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  // T = 0 still writes expert_offsets (all zero), as the CPU reference does.
  const size_t shared_bytes = sizeof(int32_t) * p.num_experts;
  DispatchKernel<<<1, kThreads, shared_bytes, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
