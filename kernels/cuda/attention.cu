// Causal GQA attention over the paged KV cache on CUDA (issue 12): the twin of
// kernels/cpu/attention.cc, its oracle (tests/gpu/backend_ops_test.cc). A first, plain
// version: one block of 128 threads per (token, q head); pass 1 finds the largest score
// of the visible keys, pass 2 walks them in tiles of 128 (each thread one key's exp(s -
// max) into shared memory, then each thread accumulates its dimensions over the tile), so
// any context length fits in a fixed amount of shared memory. fp32 throughout.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHeadDim = 256;  // two dimensions per thread at most

__device__ float BlockReduce(float v, bool is_max, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) v = is_max ? fmaxf(v, scratch[w]) : v + scratch[w];
  return v;
}

__global__ void PagedAttentionKernel(PagedAttentionParams p) {
  __shared__ float q[kMaxHeadDim];
  __shared__ float weight[kThreads];
  __shared__ float scratch[kThreads / 32];
  const int t = blockIdx.x, qh = blockIdx.y;
  const int D = p.head_dim, B = p.block_size;
  const int kvh = qh / (p.num_q_heads / p.num_kv_heads);
  const int pos = p.positions[t];
  const int lo = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
  const int32_t* table = p.block_tables[p.token_seq[t]];
  const float* qrow = p.q + (static_cast<int64_t>(t) * p.num_q_heads + qh) * D;
  for (int d = threadIdx.x; d < D; d += kThreads) q[d] = qrow[d];
  __syncthreads();

  // K of key j: [block][kvh][d][slot], the keys of a block adjacent for each d.
  auto score = [&](int j) {
    const float* k =
        p.k_cache + (static_cast<int64_t>(table[j / B]) * p.num_kv_heads + kvh) * D * B + j % B;
    float s = 0.f;
    for (int d = 0; d < D; ++d) s += q[d] * k[static_cast<int64_t>(d) * B];
    return s * p.scale;
  };

  float local_max = -FLT_MAX;
  for (int j = lo + threadIdx.x; j <= pos; j += kThreads) local_max = fmaxf(local_max, score(j));
  const float max_score = BlockReduce(local_max, /*is_max=*/true, scratch);

  float acc[2] = {0.f, 0.f};
  float local_sum = 0.f;
  for (int base = lo; base <= pos; base += kThreads) {
    const int j = base + threadIdx.x;
    const float e = j <= pos ? expf(score(j) - max_score) : 0.f;
    local_sum += e;
    __syncthreads();  // the previous tile's weights are consumed
    weight[threadIdx.x] = e;
    __syncthreads();
    const int n = min(kThreads, pos - base + 1);
    for (int k = 0; k < n; ++k) {
      const int key = base + k;
      // V of key j: [block][kvh][slot][d], a key's dimensions adjacent.
      const float* v =
          p.v_cache +
          ((static_cast<int64_t>(table[key / B]) * p.num_kv_heads + kvh) * B + key % B) * D;
      const float w = weight[k];
      for (int i = 0; i < 2; ++i) {
        const int d = threadIdx.x + i * kThreads;
        if (d < D) acc[i] += w * v[d];
      }
    }
  }
  const float sum = BlockReduce(local_sum, /*is_max=*/false, scratch);
  float* out = p.out + (static_cast<int64_t>(t) * p.num_q_heads + qh) * D;
  for (int i = 0; i < 2; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < D) out[d] = acc[i] / sum;
  }
}

}  // namespace

absl::Status CanImplement(const PagedAttentionParams& p) {
  // The CPU kernel's limits are this one's too (head_dim <= 256, blocks of 16, up to 16
  // q heads per kv head); the pointers are device memory.
  if (absl::Status s = cpu::CanImplement(p); !s.ok()) return s;
  if (p.num_tokens < 0) return absl::InvalidArgumentError("attention: bad token count");
  return absl::OkStatus();
}

absl::Status LaunchPagedAttention(const PagedAttentionParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  const dim3 grid(p.num_tokens, p.num_q_heads);
  PagedAttentionKernel<<<grid, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
