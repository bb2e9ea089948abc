#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace moe::kernels {
namespace {

// q . k over D elements with 8 independent partial sums, so the compiler vectorises it
// (a single running sum is a serial dependency it may not reorder). The order is fixed,
// so the result does not depend on the batch.
float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[d + l] * b[d + l];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

}  // namespace

absl::Status CanImplement(const PagedAttentionParams& p) {
  if (p.q == nullptr || p.out == nullptr || p.token_seq == nullptr || p.positions == nullptr ||
      p.block_tables == nullptr || p.k_cache == nullptr || p.v_cache == nullptr) {
    return absl::InvalidArgumentError("attention: null buffer");
  }
  if (p.num_kv_heads < 1 || p.num_q_heads % p.num_kv_heads != 0 || p.head_dim < 1 ||
      p.block_size < 1) {
    return absl::InvalidArgumentError("attention: bad head configuration");
  }
  return absl::OkStatus();
}

void PagedAttention(const PagedAttentionParams& p) {
  const int D = p.head_dim;
  const int group = p.num_q_heads / p.num_kv_heads;
  const size_t kv_row = static_cast<size_t>(p.num_kv_heads) * D;  // one token's K (or V)
  std::vector<float> scores;
  for (int t = 0; t < p.num_tokens; ++t) {
    const int pos = p.positions[t];
    const int32_t* table = p.block_tables[p.token_seq[t]];
    const int first = p.sliding_window > 0 ? std::max(0, pos - p.sliding_window + 1) : 0;
    const int n = pos - first + 1;
    scores.resize(n);
    for (int h = 0; h < p.num_q_heads; ++h) {
      const int kvh = h / group;
      const float* q = p.q + (static_cast<size_t>(t) * p.num_q_heads + h) * D;
      float smax = -std::numeric_limits<float>::infinity();
      for (int i = 0; i < n; ++i) {
        const int kp = first + i;
        const size_t slot =
            static_cast<size_t>(table[kp / p.block_size]) * p.block_size + kp % p.block_size;
        const float* k = p.k_cache + slot * kv_row + static_cast<size_t>(kvh) * D;
        scores[i] = Dot(q, k, D) * p.scale;
        smax = std::max(smax, scores[i]);
      }
      float sum = 0.f;
      for (int i = 0; i < n; ++i) {
        scores[i] = std::exp(scores[i] - smax);
        sum += scores[i];
      }
      float* o = p.out + (static_cast<size_t>(t) * p.num_q_heads + h) * D;
      std::fill(o, o + D, 0.f);
      for (int i = 0; i < n; ++i) {
        const int kp = first + i;
        const size_t slot =
            static_cast<size_t>(table[kp / p.block_size]) * p.block_size + kp % p.block_size;
        const float* v = p.v_cache + slot * kv_row + static_cast<size_t>(kvh) * D;
        const float w = scores[i] / sum;
        for (int d = 0; d < D; ++d) o[d] += w * v[d];
      }
    }
  }
}

}  // namespace moe::kernels
