// The forward pass's row-wise and element-wise ops on CUDA (issue 12, first piece):
// embedding, RMSNorm, RoPE, the KV write, SiLU·mul, add, clamp and the Qwen2-MoE
// sigmoid-gated add, each the CUDA twin of its kernels/cpu op (kernels/cpu/ops.h), which
// is its oracle (tests/gpu/backend_ops_test.cc). fp32 activations; bf16 or fp32 embedding tables in
// the row-major layout the CUDA backend stores weights in.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_format.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ffn_rows.cuh"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Blocks for n elements, one per thread, capped (the kernels stride over the rest).
int BlocksFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

__device__ __forceinline__ float Bf16Bits(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// One block per token: out[t, :] = table[ids[t], :].
__global__ void EmbeddingKernel(const void* table, bool bf16, int64_t H, const int32_t* ids,
                                float* out) {
  const int t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(ids[t]) * H;
  float* o = out + static_cast<int64_t>(t) * H;
  if (bf16) {
    const uint16_t* src = static_cast<const uint16_t*>(table) + row;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) o[h] = Bf16Bits(src[h]);
  } else {
    const float* src = static_cast<const float*>(table) + row;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) o[h] = src[h];
  }
}

// One block per row: the fp32 sum of squares by a block reduction, then
// y = x / sqrt(mean + eps) * weight, as kernels/cpu computes it.
__global__ void RmsNormKernel(RmsNormParams p) {
  __shared__ float partial[kThreads / 32];
  const int r = blockIdx.x;
  const int64_t src_row = p.x_rows != nullptr ? p.x_rows[r] : r;
  const float* x = p.x + src_row * p.n;
  float* y = p.y + static_cast<int64_t>(r) * p.n;
  float sum = 0.f;
  for (int i = threadIdx.x; i < p.n; i += blockDim.x) sum += x[i] * x[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    sum = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    }
    if (lane == 0) partial[0] = sum;
  }
  __syncthreads();
  const float scale = 1.f / sqrtf(partial[0] / static_cast<float>(p.n) + p.eps);
  // In place (x == y without x_rows) is safe: every read of x above is done.
  for (int i = threadIdx.x; i < p.n; i += blockDim.x) y[i] = x[i] * scale * p.weight[i];
}

__global__ void AddKernel(AddParams p) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p.x[i] += p.y[i];
  }
}

__global__ void ClampKernel(ClampParams p) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p.x[i] = fminf(fmaxf(p.x[i], -p.limit), p.limit);
  }
}

__global__ void SigmoidGatedAddKernel(SigmoidGatedAddParams p) {
  const int64_t n = static_cast<int64_t>(p.rows) * p.n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = p.gate[i / p.n];
    p.x[i] += 1.f / (1.f + expf(-g)) * p.y[i];
  }
}

// One block per token: rotate_half RoPE of every head, inv_freq and the angle in fp32 as
// kernels/cpu computes them (powf, cosf and sinf at full precision).
__global__ void RopeKernel(RopeParams p) {
  const int t = blockIdx.x;
  const int half = p.rotary_dim / 2;
  const float pos = static_cast<float>(p.positions[t]);
  for (int k = threadIdx.x; k < p.num_heads * half; k += blockDim.x) {
    const int h = k / half, i = k % half;
    const float inv_freq =
        1.f / powf(p.theta, static_cast<float>(2 * i) / static_cast<float>(p.rotary_dim));
    const float f = pos * inv_freq;
    const float c = cosf(f), s = sinf(f);
    float* v = p.x + (static_cast<int64_t>(t) * p.num_heads + h) * p.head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

// One thread per (token, kv element): K transposed within the block, [Hkv][D][B]; V per
// head, [Hkv][B][D]. block_tables is a device array of device block tables.
__global__ void KvWriteKernel(KvWriteParams p) {
  const int64_t n = static_cast<int64_t>(p.num_tokens) * p.kv_dim;
  const int B = p.block_size, D = p.kv_dim / p.num_kv_heads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>(i / p.kv_dim), j = static_cast<int>(i % p.kv_dim);
    const int pos = p.positions[t];
    const int64_t block = p.block_tables[p.token_seq[t]][pos / B];
    const int slot = pos % B;
    p.k_cache[block * p.kv_dim * B + static_cast<int64_t>(j) * B + slot] = p.k[i];
    const int h = j / D, d = j % D;
    p.v_cache[((block * p.num_kv_heads + h) * B + slot) * D + d] = p.v[i];
  }
}

// The launcher of a grid-stride kernel over n elements: check, enqueue, check the launch.
template <typename Params>
absl::Status LaunchFlat(const Params& p, int64_t n, void (*kernel)(Params), cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (n == 0) return absl::OkStatus();
  kernel<<<BlocksFor(n), kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace

absl::Status CanImplement(const EmbeddingParams& p) {
  if (p.num_tokens < 0 || p.table.rows < 1 || p.table.cols < 1) {
    return absl::InvalidArgumentError("embedding: bad shape");
  }
  if (p.table.layout != WeightLayout::kRowMajor ||
      (p.table.dtype != DType::kF32 && p.table.dtype != DType::kBF16)) {
    return absl::UnimplementedError("embedding: only row-major f32 or bf16 tables on CUDA");
  }
  if (p.num_tokens > 0 && (p.table.data == nullptr || p.ids == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError("embedding: null buffer");
  }
  // The ids are in device memory: the engine checks them against V before the step.
  return absl::OkStatus();
}

absl::Status LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  EmbeddingKernel<<<p.num_tokens, kThreads, 0, stream>>>(
      p.table.data, p.table.dtype == DType::kBF16, p.table.cols, p.ids, p.out);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

absl::Status CanImplement(const RmsNormParams& p) {
  if (p.rows < 0 || p.n < 1) return absl::InvalidArgumentError("rms_norm: bad shape");
  if (p.rows > 0 && (p.x == nullptr || p.weight == nullptr || p.y == nullptr)) {
    return absl::InvalidArgumentError("rms_norm: null buffer");
  }
  if (p.x_rows != nullptr && p.x == p.y) {
    return absl::InvalidArgumentError("rms_norm: in place with a row indirection");
  }
  return absl::OkStatus();
}

absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  RmsNormKernel<<<p.rows, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

// Shapes and pointers only, nothing device-specific: the CPU op's check.
absl::Status CanImplement(const RopeParams& p) { return cpu::CanImplement(p); }

absl::Status LaunchRope(const RopeParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  RopeKernel<<<p.num_tokens, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

// Shapes and pointers only, nothing device-specific: the CPU op's check.
absl::Status CanImplement(const KvWriteParams& p) { return cpu::CanImplement(p); }

absl::Status LaunchKvWrite(const KvWriteParams& p, cudaStream_t stream) {
  return LaunchFlat(p, static_cast<int64_t>(p.num_tokens) * p.kv_dim, KvWriteKernel, stream);
}

absl::Status CanImplement(const SiluMulParams& p) {
  if (p.rows < 0 || p.inter < 1) return absl::InvalidArgumentError("silu_mul: bad shape");
  if (p.rows > 0 && (p.gate_up == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError("silu_mul: null buffer");
  }
  return absl::OkStatus();
}

// The expert FFN's SiLU·mul kernel (ffn_rows.cuh) over every row.
absl::Status LaunchSiluMul(const SiluMulParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(p.rows) * p.inter;
  if (n == 0) return absl::OkStatus();
  SiluMulRowsKernel<<<BlocksFor(n), kThreads, 0, stream>>>(p.gate_up, RowCount{p.rows}, p.inter,
                                                           p.out);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

absl::Status CanImplement(const AddParams& p) {
  if (p.n < 0) return absl::InvalidArgumentError("add: bad shape");
  if (p.n > 0 && (p.x == nullptr || p.y == nullptr)) {
    return absl::InvalidArgumentError("add: null buffer");
  }
  return absl::OkStatus();
}

absl::Status LaunchAdd(const AddParams& p, cudaStream_t stream) {
  return LaunchFlat(p, p.n, AddKernel, stream);
}

absl::Status CanImplement(const ClampParams& p) {
  if (p.n < 0 || !(p.limit >= 0.f)) {
    return absl::InvalidArgumentError(absl::StrFormat("clamp: bad n %d or limit %g", p.n, p.limit));
  }
  if (p.n > 0 && p.x == nullptr) return absl::InvalidArgumentError("clamp: null buffer");
  return absl::OkStatus();
}

absl::Status LaunchClamp(const ClampParams& p, cudaStream_t stream) {
  return LaunchFlat(p, p.n, ClampKernel, stream);
}

absl::Status CanImplement(const SigmoidGatedAddParams& p) {
  if (p.rows < 0 || p.n < 1) return absl::InvalidArgumentError("sigmoid_gated_add: bad shape");
  if (p.rows > 0 && (p.x == nullptr || p.y == nullptr || p.gate == nullptr)) {
    return absl::InvalidArgumentError("sigmoid_gated_add: null buffer");
  }
  return absl::OkStatus();
}

absl::Status LaunchSigmoidGatedAdd(const SigmoidGatedAddParams& p, cudaStream_t stream) {
  return LaunchFlat(p, static_cast<int64_t>(p.rows) * p.n, SigmoidGatedAddKernel, stream);
}

namespace {

constexpr int kArgMaxThreads = 256;

__global__ void __launch_bounds__(kArgMaxThreads) ArgMaxKernel(ArgMaxParams p) {
  __shared__ float fscratch[kArgMaxThreads / 32];
  __shared__ int iscratch[kArgMaxThreads / 32];
  const float* row = p.x + static_cast<int64_t>(blockIdx.x) * p.n;
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int64_t i = threadIdx.x; i < p.n; i += kArgMaxThreads) {
    Better(row[i], static_cast<int>(i), best, best_i);
  }
  const int pick = BlockArgMax<kArgMaxThreads>(best, best_i, fscratch, iscratch);
  if (threadIdx.x == 0) p.ids[blockIdx.x] = pick == INT_MAX ? 0 : pick;  // a row of NaNs: 0
}

}  // namespace

absl::Status CanImplement(const ArgMaxParams& p) { return cpu::CanImplement(p); }

absl::Status LaunchArgMax(const ArgMaxParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  ArgMaxKernel<<<p.rows, kArgMaxThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
