#include "engine/sampler.h"

#include <cmath>
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
