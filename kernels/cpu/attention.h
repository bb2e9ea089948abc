// Causal GQA attention over a paged KV cache (DESIGN.md section 4), fp32. Every
// (token, q head) is computed by one thread over its visible keys in ascending position,
// so the result depends on the token's position and keys alone, never on the batch.
#pragma once

#include "absl/status/status.h"
#include "kernels/params.h"

namespace moe::kernels::cpu {

absl::Status CanImplement(const PagedAttentionParams& p);
// softmax(q k^T * scale) v per token and head.
void PagedAttention(const PagedAttentionParams& p);

}  // namespace moe::kernels::cpu
