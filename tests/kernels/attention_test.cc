// Paged attention against plain causal attention over contiguous K/V, with shuffled
// blocks, GQA, several sequences in one batch and a sliding window, on every instruction
// set this CPU has; and a sequence's outputs bit-identical alone or in a batch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/kernels_test_util.h"

namespace moe::kernels::cpu {
namespace {

constexpr int kHq = 4, kHkv = 2, kB = 16;

// One sequence's new tokens, all of them in this step: q [len, Hq, D], k and v [len, Hkv*D].
struct SeqData {
  int len = 0;
  std::vector<float> q, k, v;
};

SeqData MakeSeq(int len, int D, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  SeqData s;
  s.len = len;
  s.q.resize(static_cast<size_t>(len) * kHq * D);
  s.k.resize(static_cast<size_t>(len) * kHkv * D);
  s.v.resize(s.k.size());
  for (float& f : s.q) f = nd(rng);
  for (float& f : s.k) f = nd(rng);
  for (float& f : s.v) f = nd(rng);
  return s;
}

// Runs every sequence in one flat batch, with blocks handed out in a shuffled order, and
// returns each sequence's output [len, Hq, D].
std::vector<std::vector<float>> Attend(const std::vector<SeqData>& seqs, int D, int window,
                                       uint32_t shuffle_seed) {
  int T = 0, num_blocks = 0;
  for (const SeqData& s : seqs) {
    T += s.len;
    num_blocks += (s.len + kB - 1) / kB;
  }
  std::mt19937 rng(shuffle_seed);
  std::vector<int32_t> pool(num_blocks + 3);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  const int kv_row = kHkv * D;
  std::vector<float> kc(pool.size() * kB * kv_row, 1e30f), vc(kc.size(), 1e30f);
  std::vector<std::vector<int32_t>> tables(seqs.size());
  std::vector<const int32_t*> table_ptrs;
  std::vector<int32_t> token_seq, positions;
  std::vector<float> q, k, v;
  size_t next = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int b = 0; b < (seqs[s].len + kB - 1) / kB; ++b) tables[s].push_back(pool[next++]);
    q.insert(q.end(), seqs[s].q.begin(), seqs[s].q.end());
    k.insert(k.end(), seqs[s].k.begin(), seqs[s].k.end());
    v.insert(v.end(), seqs[s].v.begin(), seqs[s].v.end());
    for (int p = 0; p < seqs[s].len; ++p) {
      token_seq.push_back(static_cast<int32_t>(s));
      positions.push_back(p);
    }
  }
  for (auto& tb : tables) table_ptrs.push_back(tb.data());
  // The cache in its layout (kernels/params.h), written by the KV write kernel.
  KvWriteParams kw{k.data(),          v.data(), T,    kv_row,    token_seq.data(), positions.data(),
                   table_ptrs.data(), kB,       kHkv, kc.data(), vc.data()};
  EXPECT_TRUE(CanImplement(kw).ok());
  KvWrite(kw);
  std::vector<float> out(q.size(), 1e30f);
  PagedAttentionParams p;
  p.q = q.data();
  p.out = out.data();
  p.num_tokens = T;
  p.num_q_heads = kHq;
  p.num_kv_heads = kHkv;
  p.head_dim = D;
  p.token_seq = token_seq.data();
  p.positions = positions.data();
  p.block_tables = table_ptrs.data();
  p.block_size = kB;
  p.k_cache = kc.data();
  p.v_cache = vc.data();
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  p.sliding_window = window;
  EXPECT_TRUE(CanImplement(p).ok());
  PagedAttention(p);
  std::vector<std::vector<float>> per_seq;
  size_t at = 0;
  for (const SeqData& s : seqs) {
    per_seq.emplace_back(out.begin() + at, out.begin() + at + s.q.size());
    at += s.q.size();
  }
  return per_seq;
}

// Contiguous causal attention of one sequence in double.
void ExpectMatchesReference(const SeqData& s, const std::vector<float>& out, int D, int window) {
  const int kv_row = kHkv * D;
  for (int i = 0; i < s.len; ++i) {
    for (int h = 0; h < kHq; ++h) {
      const int kvh = h / (kHq / kHkv);
      const int first = window > 0 ? std::max(0, i - window + 1) : 0;
      std::vector<double> sc;
      double mx = -1e300;
      for (int j = first; j <= i; ++j) {
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          dot += static_cast<double>(s.q[(static_cast<size_t>(i) * kHq + h) * D + d]) *
                 s.k[static_cast<size_t>(j) * kv_row + kvh * D + d];
        }
        sc.push_back(dot / std::sqrt(static_cast<double>(D)));
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (double& x : sc) sum += (x = std::exp(x - mx));
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int j = first; j <= i; ++j) {
          o += sc[j - first] / sum * s.v[static_cast<size_t>(j) * kv_row + kvh * D + d];
        }
        ASSERT_NEAR(out[(static_cast<size_t>(i) * kHq + h) * D + d], o, 1e-5)
            << "pos " << i << " head " << h << " D " << D;
      }
    }
  }
}

class PagedAttentionTest : public IsaTest {};

TEST_P(PagedAttentionTest, MatchesContiguousCausalAttention) {
  for (int D : {8, 64, 80}) {
    std::vector<SeqData> seqs;
    for (int len : {1, 9, 4, 13, 40}) seqs.push_back(MakeSeq(len, D, 100 + len));
    const auto out = Attend(seqs, D, /*window=*/0, 5);
    for (size_t s = 0; s < seqs.size(); ++s) ExpectMatchesReference(seqs[s], out[s], D, 0);
  }
}

TEST_P(PagedAttentionTest, SlidingWindowLimitsKeys) {
  std::vector<SeqData> seqs;
  for (int len : {1, 9, 4, 13, 37}) seqs.push_back(MakeSeq(len, 8, 200 + len));
  for (int window : {3, 17}) {
    const auto out = Attend(seqs, 8, window, 6);
    for (size_t s = 0; s < seqs.size(); ++s) ExpectMatchesReference(seqs[s], out[s], 8, window);
  }
}

TEST_P(PagedAttentionTest, SequenceOutputsDoNotDependOnTheBatch) {
  const int D = 64;
  const SeqData target = MakeSeq(37, D, 1);
  const std::vector<float> alone = Attend({target}, D, 0, 7)[0];
  const auto batched =
      Attend({MakeSeq(5, D, 2), MakeSeq(21, D, 3), target, MakeSeq(2, D, 4)}, D, 0, 8);
  ASSERT_EQ(batched[2].size(), alone.size());
  EXPECT_EQ(std::memcmp(batched[2].data(), alone.data(), alone.size() * sizeof(float)), 0);
}

INSTANTIATE_ISA_TEST_SUITE(PagedAttentionTest);

TEST(PagedAttentionLimitsTest, RejectsHeadsNotDivisibleByKvHeads) {
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
}  // namespace moe::kernels::cpu
