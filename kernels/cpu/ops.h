// Dense CPU kernels of the transformer block besides the GEMM (kernels/cpu/gemm.h):
// embedding lookup, RMSNorm, rotary embeddings, SwiGLU, residual add, clamp, KV write.
// fp32 activations. Each has a CanImplement checking the limits it assumes.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/params.h"

namespace moe::kernels::cpu {

absl::Status CanImplement(const EmbeddingParams& p);
// Row-major f32/bf16 tables, or the packed matrix of a tied LM head.
void Embedding(const EmbeddingParams& p);

absl::Status CanImplement(const RmsNormParams& p);
void RmsNorm(const RmsNormParams& p);

absl::Status CanImplement(const RopeParams& p);
void Rope(const RopeParams& p);

absl::Status CanImplement(const SiluMulParams& p);
void SiluMul(const SiluMulParams& p);

void Add(const AddParams& p);
absl::Status CanImplement(const SigmoidGatedAddParams& p);
void SigmoidGatedAdd(const SigmoidGatedAddParams& p);
void Clamp(const ClampParams& p);

absl::Status CanImplement(const KvWriteParams& p);
void KvWrite(const KvWriteParams& p);

// out[i] = e^((x[i] - shift) * scale) for i in [0, n), within 2 ulp for arguments in
// [-87, 88] (below: about 1.6e-38, never 0); returns the sum of out. On the calling
// thread: the sampler's softmax numerators, one exp per vocabulary entry.
float ExpRow(const float* x, int64_t n, float scale, float shift, float* out);
// The largest of x[0, n), n >= 1, on the calling thread (unspecified with NaNs).
float MaxRow(const float* x, int64_t n);
// The lowest index of the largest of x[0, n) (MaxRow, then the first entry equal to it;
// 0 when none is, as with only NaNs), on the calling thread: the sampler's greedy pick.
int32_t ArgMaxRow(const float* x, int64_t n);

absl::Status CanImplement(const ArgMaxParams& p);
absl::Status CanImplement(const SampleParams& p);
absl::Status CanImplement(const SelfContrastRowsParams& p);
// ContrastRow on every pair (the CUDA kernel's oracle).
void SelfContrastRows(const SelfContrastRowsParams& p);
// The reference of kernels::SampleParams (the CUDA kernel's oracle).
void Sample(const SampleParams& p);
// A float's position in the order of floats as an unsigned key (-0 below +0; NaNs at the
// ends), so cuts can be found by bisection on the key's bits.
inline uint32_t OrderKey(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// ArgMaxRow of every row, rows split between the threads.
void ArgMax(const ArgMaxParams& p);

}  // namespace moe::kernels::cpu
