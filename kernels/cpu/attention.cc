#include "kernels/cpu/attention.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace moe::kernels::cpu {

absl::Status CanImplement(const PagedAttentionParams& p) {
  if (p.num_tokens > 0 &&
      (p.q == nullptr || p.out == nullptr || p.token_seq == nullptr || p.positions == nullptr ||
       p.block_tables == nullptr || p.k_cache == nullptr || p.v_cache == nullptr)) {
    return absl::InvalidArgumentError("attention: null buffer");
  }
  if (p.num_kv_heads < 1 || p.num_q_heads % p.num_kv_heads != 0 || p.head_dim < 1 ||
      p.block_size < 1) {
    return absl::InvalidArgumentError("attention: bad head configuration");
  }
  if (p.head_dim > 256) return absl::InvalidArgumentError("attention: head_dim above 256");
  return absl::OkStatus();
}

void PagedAttention(const PagedAttentionParams& p) {
  if (p.num_tokens == 0) return;
  int longest = 1;
  for (int t = 0; t < p.num_tokens; ++t) longest = std::max(longest, p.positions[t] + 1);
  if (p.sliding_window > 0) longest = std::min(longest, p.sliding_window);
  const int64_t items = static_cast<int64_t>(p.num_tokens) * p.num_q_heads;
  const IsaKernels& k = Kernels();
  // A (token, head) item costs about 4 D multiply-adds per visible key.
  const int64_t grain = std::max<int64_t>(1, 4096 / (static_cast<int64_t>(longest) * p.head_dim));
  ParallelFor(items, grain, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(longest) + 16) scores.resize(longest + 16);
    k.attention_items(p, i0, i1, scores.data());
  });
}

}  // namespace moe::kernels::cpu
