// The element-wise steps of the expert FFN over the plan's rows, shared by the cuBLAS
// path (expert_ffn.cu, rows known on the host), the device-plan path (grouped_gemm.cu,
// rows read on the device from expert_offsets[E]) and the SiluMul op (elementwise.cu). Grid-stride; OutT float or bf16 (round
// to nearest even).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moe::kernels::cuda {

// The plan's row count: `device` (expert_offsets + E) when set, else `host`.
struct RowCount {
  int host = 0;
  const int32_t* device = nullptr;
  __device__ int get() const { return device != nullptr ? *device : host; }
};

__device__ inline void StoreAs(float* p, float v) { *p = v; }
__device__ inline void StoreAs(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// out[row] = x[sorted_pairs[row] / K] for the plan's rows.
template <typename OutT>
__global__ void GatherRowsKernel(const float* __restrict__ x,
                                 const int32_t* __restrict__ sorted_pairs, RowCount rows, int top_k,
                                 int hidden, OutT* __restrict__ out) {
  const int64_t n = static_cast<int64_t>(rows.get()) * hidden;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / hidden;
    const int64_t h = idx - row * hidden;
    const int64_t token = sorted_pairs[row] / top_k;
    StoreAs(out + idx, x[token * hidden + h]);
  }
}

// act[r, i] = silu(g[r, i]) * g[r, I + i], silu(g) = g / (1 + exp(-g)) as in
// kernels::SiluMul, for the plan's rows.
template <typename OutT>
__global__ void SiluMulRowsKernel(const float* __restrict__ gate_up, RowCount rows, int inter,
                                  OutT* __restrict__ act) {
  const int64_t n = static_cast<int64_t>(rows.get()) * inter;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / inter;
    const int64_t i = idx - row * inter;
    const float g = gate_up[row * 2 * inter + i];
    const float u = gate_up[row * 2 * inter + inter + i];
    StoreAs(act + idx, g / (1.f + expf(-g)) * u);
  }
}

}  // namespace moe::kernels::cuda
