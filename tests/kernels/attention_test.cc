// Paged attention against plain causal attention over contiguous K/V, with shuffled
// blocks, GQA, several sequences in one batch and a sliding window.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/attention.h"

namespace moe::kernels {
namespace {

struct Seq {
  int len;  // tokens (all in this step)
};

void RunCase(int window) {
  const int Hq = 4, Hkv = 2, D = 8, B = 4;
  const std::vector<int> lens = {1, 9, 4, 13};
  std::mt19937 rng(3 + window);
  std::normal_distribution<float> nd;
  int T = 0;
  for (int l : lens) T += l;
  int num_blocks = 0;
  for (int l : lens) num_blocks += (l + B - 1) / B;
  // Hand out blocks in shuffled order so tables are not contiguous.
  std::vector<int32_t> pool(num_blocks + 3);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  const int kv_row = Hkv * D;
  std::vector<float> kc(static_cast<size_t>(pool.size()) * B * kv_row, 1e30f),
      vc(static_cast<size_t>(pool.size()) * B * kv_row, 1e30f);
  std::vector<std::vector<int32_t>> tables(lens.size());
  std::vector<const int32_t*> table_ptrs;
  std::vector<int32_t> token_seq, positions;
  std::vector<float> q(static_cast<size_t>(T) * Hq * D), k(static_cast<size_t>(T) * kv_row),
      v(static_cast<size_t>(T) * kv_row);
  for (float& f : q) f = nd(rng);
  for (float& f : k) f = nd(rng);
  for (float& f : v) f = nd(rng);
  size_t next = 0;
  int t = 0;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int b = 0; b < (lens[s] + B - 1) / B; ++b) tables[s].push_back(pool[next++]);
    for (int p = 0; p < lens[s]; ++p, ++t) {
      token_seq.push_back(static_cast<int32_t>(s));
      positions.push_back(p);
      const size_t slot = static_cast<size_t>(tables[s][p / B]) * B + p % B;
      std::copy_n(k.begin() + static_cast<size_t>(t) * kv_row, kv_row, kc.begin() + slot * kv_row);
      std::copy_n(v.begin() + static_cast<size_t>(t) * kv_row, kv_row, vc.begin() + slot * kv_row);
    }
  }
  for (auto& tb : tables) table_ptrs.push_back(tb.data());
  std::vector<float> out(q.size(), 1e30f);
  PagedAttentionParams p;
  p.q = q.data();
  p.out = out.data();
  p.num_tokens = T;
  p.num_q_heads = Hq;
  p.num_kv_heads = Hkv;
  p.head_dim = D;
  p.token_seq = token_seq.data();
  p.positions = positions.data();
  p.block_tables = table_ptrs.data();
  p.block_size = B;
  p.k_cache = kc.data();
  p.v_cache = vc.data();
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  p.sliding_window = window;
  ASSERT_TRUE(CanImplement(p).ok());
  PagedAttention(p);

  // Reference: contiguous per-sequence attention in double.
  int base = 0;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int i = 0; i < lens[s]; ++i) {
      for (int h = 0; h < Hq; ++h) {
        const int kvh = h / (Hq / Hkv);
        const int first = window > 0 ? std::max(0, i - window + 1) : 0;
        std::vector<double> sc;
        double mx = -1e300;
        for (int j = first; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) {
            dot += q[(static_cast<size_t>(base + i) * Hq + h) * D + d] *
                   k[static_cast<size_t>(base + j) * kv_row + kvh * D + d];
          }
          sc.push_back(dot / std::sqrt(static_cast<double>(D)));
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int j = first; j <= i; ++j) {
            o += sc[j - first] / sum * v[static_cast<size_t>(base + j) * kv_row + kvh * D + d];
          }
          EXPECT_NEAR(out[(static_cast<size_t>(base + i) * Hq + h) * D + d], o, 1e-5)
              << "seq " << s << " pos " << i << " head " << h;
        }
      }
    }
    base += lens[s];
  }
}

TEST(PagedAttentionTest, MatchesContiguousCausalAttention) { RunCase(0); }
TEST(PagedAttentionTest, SlidingWindowLimitsKeys) { RunCase(3); }

TEST(PagedAttentionTest, RejectsHeadsNotDivisibleByKvHeads) {
  std::vector<float> buf(16);
  std::vector<int32_t> ints(4);
  const int32_t* tables[1] = {ints.data()};
  PagedAttentionParams p;
  p.q = p.k_cache = p.v_cache = buf.data();
  p.out = buf.data();
  p.token_seq = p.positions = ints.data();
  p.block_tables = tables;
  p.num_q_heads = 3;
  p.num_kv_heads = 2;
  p.head_dim = 2;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::kernels
