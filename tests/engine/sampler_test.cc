#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

namespace moe {
namespace {

TEST(SamplerTest, GreedyPicksTheArgmaxAndLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0.f;
  Sampler s(p);
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.f, -2.f, 2.9f}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{1.f, 5.f, 5.f}), 1);
}

TEST(SamplerTest, SeedMakesDrawsReproducible) {
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 42;
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  Sampler a(p), b(p);
  std::vector<int32_t> da, db;
  for (int i = 0; i < 100; ++i) {
    da.push_back(a.Sample(logits));
    db.push_back(b.Sample(logits));
  }
  EXPECT_EQ(da, db);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> dc;
  for (int i = 0; i < 100; ++i) dc.push_back(c.Sample(logits));
  EXPECT_NE(da, dc);
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 1;
  Sampler s(p);
  const std::vector<float> logits = {0.f, std::log(3.f)};  // p = [0.25, 0.75]
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.Sample(logits);
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.015);
}

TEST(SamplerTest, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.25f;  // p ~ [1, 81] / 82
  p.seed = 2;
  Sampler s(p);
  const std::vector<float> logits = {0.f, std::log(3.f)};
  int ones = 0;
  for (int i = 0; i < 10000; ++i) ones += s.Sample(logits);
  EXPECT_GT(ones, 9750);
}

TEST(SamplerTest, TopKNeverLeavesTheKBest) {
  SamplingParams p;
  p.top_k = 2;
  p.seed = 3;
  Sampler s(p);
  const std::vector<float> logits = {1.f, 0.9f, 0.8f, 1.1f, 0.7f};
  int seen[5] = {};
  for (int i = 0; i < 3000; ++i) ++seen[s.Sample(logits)];
  EXPECT_EQ(seen[1] + seen[2] + seen[4], 0);
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[3], 0);
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  SamplingParams p;
  p.top_p = 0.6f;  // probs 0.5, 0.3, 0.2: the prefix {0, 1} reaches 0.8 >= 0.6
  p.seed = 4;
  Sampler s(p);
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  int seen[3] = {};
  for (int i = 0; i < 5000; ++i) ++seen[s.Sample(logits)];
  EXPECT_EQ(seen[2], 0);
  EXPECT_NEAR(seen[0] / 5000.0, 0.5 / 0.8, 0.03);
  p.top_p = 0.4f;  // the first token alone reaches it
  Sampler s2(p);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s2.Sample(logits), 0);
}

TEST(SamplerTest, TinyTemperaturesAreGreedy) {
  const std::vector<float> logits = {0.1f, 3.f, -2.f, 2.9999f, 3.f};
  for (float t : {1e-38f, 1e-30f, 1e-6f}) {
    for (float top_p : {1.f, 0.9f}) {
      SamplingParams p;
      p.temperature = t;
      p.top_p = top_p;
      p.seed = 5;
      Sampler s(p);
      for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample(logits), 1) << t;
    }
  }
}

TEST(SamplerTest, TopKTiesGoToTheLowestIds) {
  SamplingParams p;
  p.top_k = 3;
  p.seed = 6;
  Sampler s(p);
  const std::vector<float> logits(1000, 0.5f);
  int seen[1000] = {};
  for (int i = 0; i < 3000; ++i) ++seen[s.Sample(logits)];
  EXPECT_GT(seen[0], 800);
  EXPECT_GT(seen[1], 800);
  EXPECT_GT(seen[2], 800);
  EXPECT_EQ(seen[0] + seen[1] + seen[2], 3000);
}

// The nucleus by a full sort in double: the reference the sampler's partial selection
// must agree with.
std::vector<int32_t> ReferenceNucleus(const std::vector<float>& logits, float t, float top_p) {
  const int V = static_cast<int>(logits.size());
  std::vector<int32_t> order(V);
  for (int i = 0; i < V; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<double> w(V);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += w[i] = std::exp((logits[order[i]] - logits[order[0]]) / t);
  double cum = 0;
  for (int i = 0; i < V; ++i) {
    cum += w[i];
    if (cum >= top_p * sum) return std::vector<int32_t>(order.begin(), order.begin() + i + 1);
  }
  return order;
}

TEST(SamplerTest, TopPOnA151936TokenVocabularyDrawsOnlyFromTheNucleus) {
  // Peaked (a few hundred plausible tokens: the candidates suffice) and nearly flat
  // (the candidates do not reach top_p: the whole vocabulary is sorted).
  const int V = 151936;
  for (const bool peaked : {true, false}) {
    std::vector<float> logits(V);
    uint32_t x = 12345;
    for (int i = 0; i < V; ++i) {
      x = x * 1664525u + 1013904223u;
      const float u = static_cast<float>(x >> 8) / (1 << 24);
      logits[i] = peaked ? (i % 500 == 7 ? 10.f + 4.f * u : -20.f * u) : 0.01f * u;
    }
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_p = 0.9f;
    p.seed = 7;
    Sampler s(p);
    const std::vector<int32_t> nucleus = ReferenceNucleus(logits, p.temperature, p.top_p);
    std::vector<bool> in(V, false);
    for (int32_t id : nucleus) in[id] = true;
    if (peaked) {
      EXPECT_LT(nucleus.size(), 400u);
    } else {
      EXPECT_GT(nucleus.size(), 100000u);
    }
    for (int i = 0; i < (peaked ? 300 : 20); ++i) {  // a flat row sorts all of V each time
      const int32_t id = s.Sample(logits);
      ASSERT_TRUE(in[id]) << id << (peaked ? " peaked" : " flat");
    }
  }
}

TEST(SamplerTest, FullSoftmaxOnALargeVocabularyFollowsTheWeights) {
  // Two heavy tokens (weights 1 and 3) among 100,000 negligible ones.
  std::vector<float> logits(100000, -40.f);
  logits[123] = 0.f;
  logits[99998] = std::log(3.f);
  SamplingParams p;
  p.seed = 8;
  Sampler s(p);
  int heavy = 0, last = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const int32_t id = s.Sample(logits);
    heavy += id == 123 || id == 99998;
    last += id == 99998;
  }
  EXPECT_GE(heavy, n - 5);
  EXPECT_NEAR(static_cast<double>(last) / n, 0.75, 0.025);
}

TEST(SamplerTest, ValidateRejectsBadParameters) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.temperature = -0.1f;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.temperature = 1.f;
  p.top_p = 0.f;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.top_p = 1.5f;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.top_p = 1.f;
  p.top_k = -1;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
