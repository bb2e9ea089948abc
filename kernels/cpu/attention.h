// Causal GQA attention over a paged KV cache (DESIGN.md section 4). The caller has
// already written this step's K/V rows into the cache, so every token reads its keys,
// including its own, from the cache. Glossary: T tokens, S sequences, B block size,
// D head dim.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels {

struct PagedAttentionParams {
  const float* q = nullptr;  // [T, num_q_heads, D], RoPE applied
  float* out = nullptr;      // [T, num_q_heads, D]
  int num_tokens = 0;        // T
  int num_q_heads = 0;
  int num_kv_heads = 0;                          // divides num_q_heads (GQA)
  int head_dim = 0;                              // D
  const int32_t* token_seq = nullptr;            // [T] sequence of each token
  const int32_t* positions = nullptr;            // [T] position; keys [0, position] are visible
  const int32_t* const* block_tables = nullptr;  // [S] -> block ids covering positions
  int block_size = 16;                           // B
  // One layer's cache: [num_blocks, B, num_kv_heads, D] each.
  const float* k_cache = nullptr;
  const float* v_cache = nullptr;
  float scale = 1.f;       // usually 1/sqrt(D)
  int sliding_window = 0;  // > 0: only keys with position > query position - window
};

absl::Status CanImplement(const PagedAttentionParams& p);
// softmax(q k^T * scale) v per token and head, fp32, keys in ascending position.
void PagedAttention(const PagedAttentionParams& p);

}  // namespace moe::kernels
