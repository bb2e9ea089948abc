// Dense CPU kernels of the transformer block besides the GEMM (kernels/cpu/gemm.h):
// embedding lookup, RMSNorm, rotary embeddings, SwiGLU, residual add, clamp, KV write.
// fp32 activations. Each has a CanImplement checking the limits it assumes.
#pragma once

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

}  // namespace moe::kernels::cpu
