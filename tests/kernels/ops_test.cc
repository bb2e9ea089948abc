// The element-wise and row kernels (kernels/cpu/ops.h) on every instruction set this CPU
// has, against plain double-precision loops: RMSNorm, SiLU * up (and so the vector exp),
// residual add, embedding lookups from every table layout, KV write, RoPE, and the
// sampler's row exp and max.
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/gemm.h"
#include "tests/kernels/kernels_test_util.h"

namespace moe::kernels::cpu {
namespace {

class OpsTest : public IsaTest {};

TEST_P(OpsTest, RmsNormMatchesReference) {
  std::mt19937 rng(21);
  for (int n : {1, 15, 16, 17, 64, 1000}) {
    const int rows = 7;
    std::vector<float> x = Random(static_cast<size_t>(rows) * n, rng, 3.f);
    std::vector<float> w = Random(n, rng);
    std::vector<float> y(x.size() + 1, kPoison);
    RmsNormParams p{x.data(), w.data(), rows, n, 1e-6f, y.data()};
    ASSERT_TRUE(CanImplement(p).ok());
    RmsNorm(p);
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
      const double inv = 1 / std::sqrt(ss / n + 1e-6);
      for (int i = 0; i < n; ++i) {
        const double want = w[i] * x[r * n + i] * inv;
        ASSERT_NEAR(y[r * n + i], want, 2e-6 * (std::fabs(want) + 1e-3)) << "n=" << n;
      }
    }
    EXPECT_EQ(y.back(), kPoison);
  }
}

TEST_P(OpsTest, SiluMulMatchesReferenceOverTheWholeRange) {
  std::vector<float> gu;
  const int I = 37, rows = 40;
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < 2 * I; ++i) gu.push_back((r - 20) * 5.f + i * 0.11f - 4.f);  // [-104, 100]
  }
  std::vector<float> out(static_cast<size_t>(rows) * I + 1, kPoison);
  SiluMulParams p{gu.data(), rows, I, out.data()};
  ASSERT_TRUE(CanImplement(p).ok());
  SiluMul(p);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < I; ++i) {
      const double g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i];
      const double want = g / (1 + std::exp(-g)) * u;
      ASSERT_NEAR(out[r * I + i], want, 1e-6 * std::fabs(want) + 1e-30) << "g=" << g;
    }
  }
  EXPECT_EQ(out.back(), kPoison);
}

TEST_P(OpsTest, AddIsElementWise) {
  std::mt19937 rng(22);
  std::vector<float> x = Random(100003, rng), y = Random(100003, rng), want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] + y[i];
  Add({x.data(), y.data(), static_cast<int64_t>(x.size())});
  EXPECT_EQ(x, want);
}

TEST_P(OpsTest, EmbeddingFromEveryLayout) {
  std::mt19937 rng(23);
  const int V = 37, H = 19;
  std::vector<float> table = Random(static_cast<size_t>(V) * H, rng);
  for (float& f : table) f = Bf16ToFloat(FloatToBf16(f));  // exact in both dtypes
  std::vector<uint16_t> table16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table16[i] = FloatToBf16(table[i]);
  const std::vector<int32_t> ids = {0, 36, 17, 17, 5};
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (WeightLayout layout : {WeightLayout::kRowMajor, WeightLayout::kPanels16}) {
      std::vector<char> packed(MatrixBytes(dtype, WeightLayout::kPanels16, V, H));
      MatrixRef ref{nullptr, dtype, layout, V, H};
      if (layout == WeightLayout::kPanels16) {
        PackSource src{table.data(), SourceType::kF32, V};
        PackPanels(std::span(&src, 1), H, dtype, packed.data());
        ref.data = packed.data();
      } else {
        ref.data = dtype == DType::kF32 ? static_cast<const void*>(table.data()) : table16.data();
      }
      std::vector<float> out(ids.size() * H, kPoison);
      EmbeddingParams p{ref, ids.data(), static_cast<int>(ids.size()), out.data()};
      ASSERT_TRUE(CanImplement(p).ok());
      Embedding(p);
      for (size_t t = 0; t < ids.size(); ++t) {
        for (int h = 0; h < H; ++h) {
          ASSERT_EQ(out[t * H + h], table[ids[t] * H + h])
              << DTypeName(dtype) << " layout " << static_cast<int>(layout);
        }
      }
      const int32_t bad = V;
      EXPECT_FALSE(CanImplement(EmbeddingParams{ref, &bad, 1, out.data()}).ok());
    }
  }
}

INSTANTIATE_ISA_TEST_SUITE(OpsTest);

TEST(KvWriteTest, WritesEachTokenToItsSlot) {
  const int kv_dim = 3, B = 4;
  std::vector<float> k = {1, 2, 3, 4, 5, 6}, v = {-1, -2, -3, -4, -5, -6};
  const std::vector<int32_t> table0 = {2, 0}, table1 = {1};
  const int32_t* tables[] = {table0.data(), table1.data()};
  const std::vector<int32_t> seq = {0, 1}, pos = {5, 2};
  std::vector<float> kc(3 * B * kv_dim, kPoison), vc(3 * B * kv_dim, kPoison);
  KvWriteParams p{k.data(), v.data(), 2,           kv_dim,    seq.data(), pos.data(),
                  tables,   B,        /*heads=*/1, kc.data(), vc.data()};
  ASSERT_TRUE(CanImplement(p).ok());
  KvWrite(p);
  // Token 0: position 5 -> block table0[1] = 0, slot 1. Token 1: position 2 -> block 1, slot 2.
  // One kv head of D = 3: K is [block][D][B] (transposed), V [block][B][D].
  EXPECT_EQ(kc[(0 * kv_dim + 2) * B + 1], 3);
  EXPECT_EQ(kc[(1 * kv_dim + 0) * B + 2], 4);
  EXPECT_EQ(vc[(1 * B + 2) * kv_dim], -4);
  EXPECT_EQ(vc[(0 * B + 1) * kv_dim + 1], -2);
  EXPECT_EQ(kc[0], kPoison);
  p.num_kv_heads = 2;  // 3 is not a multiple of 2 heads
  EXPECT_FALSE(CanImplement(p).ok());
}

TEST_P(OpsTest, ExpRowAndMaxRowMatchReference) {
  std::mt19937 rng(23);
  for (int n : {1, 15, 16, 17, 100, 4099}) {
    std::vector<float> x = Random(n, rng, 10.f);
    for (float& v : x) v = std::min(v, 30.f);
    x[n / 2] = 31.f;  // the largest
    std::vector<float> out(n + 1, kPoison);
    EXPECT_EQ(MaxRow(x.data(), n), 31.f) << n;
    const float scale = 1.25f, shift = 31.f;
    const float sum = ExpRow(x.data(), n, scale, shift, out.data());
    double want_sum = 0;
    for (int i = 0; i < n; ++i) {
      // The argument as the kernel forms it, in float; its exp to 2 ulp.
      const float arg = (x[i] - shift) * scale;
      const double want = std::exp(static_cast<double>(arg));
      want_sum += want;
      ASSERT_NEAR(out[i], want, 3e-7 * want + 1e-37) << "n=" << n << " i=" << i;
    }
    EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum) << n;  // the lanes past n are not summed
    EXPECT_EQ(out[n], kPoison);
  }
}

TEST(RopeTest, RotatesPairsByPosition) {
  // One head, D = 4: pairs (0, 2) and (1, 3), inv_freq = {1, 1/100} for theta 10^4.
  std::vector<float> x = {1, 1, 0, 0};
  const int32_t pos = 2;
  RopeParams p{x.data(), &pos, 1, 1, 4, 4, 10000.f};
  ASSERT_TRUE(CanImplement(p).ok());
  Rope(p);
  EXPECT_NEAR(x[0], std::cos(2.f), 1e-6);
  EXPECT_NEAR(x[2], std::sin(2.f), 1e-6);
  EXPECT_NEAR(x[1], std::cos(0.02f), 1e-6);
  EXPECT_NEAR(x[3], std::sin(0.02f), 1e-6);
}

// The device sampling op's reference (kernels::SampleParams): one row drawn at many
// uniforms in [0, 1). Returns how often each id came out.
std::vector<int> SampleCounts(const std::vector<float>& logits, float temperature, int top_k,
                              float top_p, int draws) {
  const int64_t n = static_cast<int64_t>(logits.size());
  std::vector<float> t(draws, temperature), p(draws, top_p), u(draws);
  std::vector<int32_t> k(draws, top_k), ids(draws, -1);
  std::vector<float> x;
  for (int d = 0; d < draws; ++d) {
    u[d] = (d + 0.5f) / draws;  // an even grid: counts follow the kept probabilities
    x.insert(x.end(), logits.begin(), logits.end());
  }
  SampleParams sp{x.data(), draws, n, t.data(), k.data(), p.data(), u.data(), ids.data()};
  EXPECT_TRUE(CanImplement(sp).ok());
  Sample(sp);
  std::vector<int> counts(n, 0);
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, n);
    if (id >= 0 && id < n) ++counts[id];
  }
  return counts;
}

TEST(SampleTest, GreedyBelowTheTemperatureFloorIsTheArgmaxWithTiesToTheLowerId) {
  const std::vector<float> logits = {0.f, 3.f, -1.f, 3.f, 2.f};
  const std::vector<int> counts = SampleCounts(logits, 0.f, 0, 1.f, 10);
  EXPECT_EQ(counts[1], 10);
}

TEST(SampleTest, DrawsFollowTheSoftmaxOfTheTemperedLogits) {
  const std::vector<float> logits = {1.f, 2.f, 0.f, 3.f};
  const float temperature = 2.f;
  const int draws = 100000;
  const std::vector<int> counts = SampleCounts(logits, temperature, 0, 1.f, draws);
  double z = 0;
  for (float l : logits) z += std::exp(l / temperature);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double want = std::exp(logits[i] / temperature) / z;
    EXPECT_NEAR(counts[i] / double{draws}, want, 2.0 / draws) << "id " << i;
  }
}

TEST(SampleTest, TopKKeepsTheKLargestAndTiesAtTheCut) {
  const std::vector<float> logits = {5.f, 1.f, 4.f, 4.f, 0.f, 3.f};
  // k = 2: 5 and the tie at 4 (both kept).
  const std::vector<int> two = SampleCounts(logits, 1.f, 2, 1.f, 3000);
  EXPECT_GT(two[0], 0);
  EXPECT_GT(two[2], 0);
  EXPECT_GT(two[3], 0);
  EXPECT_EQ(two[1] + two[4] + two[5], 0);
  const std::vector<int> one = SampleCounts(logits, 1.f, 1, 1.f, 100);
  EXPECT_EQ(one[0], 100);
}

TEST(SampleTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (in that order of size).
  const std::vector<float> logits = {std::log(0.125f), std::log(0.5f), std::log(0.25f),
                                     std::log(0.125f) - 1e-3f};
  // 0.7: 0.5 + 0.25 reaches it; the rest is cut and the two kept renormalise to 2/3, 1/3.
  const int draws = 30000;
  const std::vector<int> counts = SampleCounts(logits, 1.f, 0, 0.7f, draws);
  EXPECT_EQ(counts[0] + counts[3], 0);
  EXPECT_NEAR(counts[1] / double{draws}, 2.0 / 3, 2.0 / draws);
  EXPECT_NEAR(counts[2] / double{draws}, 1.0 / 3, 2.0 / draws);
  // 0.5 exactly: the largest alone reaches it.
  EXPECT_EQ(SampleCounts(logits, 1.f, 0, 0.5f, 50)[1], 50);
}

TEST(SampleTest, RefusesMissingBuffers) {
  SampleParams p;
  p.rows = 1;
  p.n = 4;
  EXPECT_FALSE(CanImplement(p).ok());
  p.n = 0;
  EXPECT_FALSE(CanImplement(p).ok());
}

}  // namespace
}  // namespace moe::kernels::cpu
