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
  if (p.num_q_heads / p.num_kv_heads > 16) {
    return absl::InvalidArgumentError("attention: more than 16 q heads per kv head");
  }
  if (p.block_size != 16) {
    return absl::InvalidArgumentError("attention: the CPU kernel reads blocks of 16 tokens");
  }
  return absl::OkStatus();
}

void PagedAttention(const PagedAttentionParams& p) {
  if (p.num_tokens == 0) return;
  int longest = 1;
  for (int t = 0; t < p.num_tokens; ++t) longest = std::max(longest, p.positions[t] + 1);
  if (p.sliding_window > 0) longest = std::min(longest, p.sliding_window);
  const int group = p.num_q_heads / p.num_kv_heads;
  const int64_t items = static_cast<int64_t>(p.num_tokens) * p.num_kv_heads;
  const IsaKernels& k = Kernels();
  // A (token, kv head) item costs about 2 D multiply-adds per q head per visible key: the
  // threads get equal shares of the visible keys (a prefill's late tokens see more keys
  // than its early ones), cut between items.
  std::vector<int64_t> keys_before(p.num_tokens + 1, 0);  // over the tokens, per kv head
  for (int t = 0; t < p.num_tokens; ++t) {
    const int pos = p.positions[t];
    const int visible = p.sliding_window > 0 ? std::min(pos + 1, p.sliding_window) : pos + 1;
    keys_before[t + 1] = keys_before[t] + visible;
  }
  const int64_t total = keys_before[p.num_tokens] * p.num_kv_heads;  // item-keys
  const int64_t work = total * group * p.head_dim;
  const int tasks =
      work < (1 << 15) ? 1 : static_cast<int>(std::min<int64_t>(4 * NumThreads(), items));
  auto run = [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> scores;
    const size_t need = static_cast<size_t>(group) * (longest + 16);
    if (scores.size() < need) scores.resize(need);
    k.attention_items(p, i0, i1, scores.data());
  };
  if (tasks <= 1 || NumThreads() == 1) {
    run(0, items);
    return;
  }
  // Keys of the items before item i = t * Hkv + h.
  auto cost_before = [&](int64_t i) {
    const int64_t t = i / p.num_kv_heads, h = i % p.num_kv_heads;
    return keys_before[t] * p.num_kv_heads + h * (keys_before[t + 1] - keys_before[t]);
  };
  // Task j (four per thread) starts at the first item whose cost reaches j / tasks of the
  // total.
  std::vector<int64_t> start(tasks + 1, items);
  start[0] = 0;
  for (int j = 1; j < tasks; ++j) {
    const int64_t target = total * j / tasks;
    int64_t lo = start[j - 1], hi = items;  // first item with cost_before(item) >= target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cost_before(mid) >= target) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    start[j] = lo;
  }
  ParallelTasks(tasks, [&](int j) { run(start[j], start[j + 1]); });
}

}  // namespace moe::kernels::cpu
