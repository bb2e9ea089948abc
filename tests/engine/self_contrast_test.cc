// The SCMoE combination rule (engine/self_contrast.h) against the spec's Appendix A
// vectors and its edge cases (specs/moe_algorithms.md sections 1.2 and 1.4).
#include "engine/self_contrast.h"

#include "engine/sampler.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace moe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

int32_t ArgMax(const std::vector<float>& row) {
  int32_t best = 0;
  for (size_t v = 1; v < row.size(); ++v) {
    if (row[v] > row[best]) best = static_cast<int32_t>(v);
  }
  return best;
}

std::vector<float> RandomRow(std::mt19937& rng, int vocab) {
  std::normal_distribution<float> normal(0.f, 2.f);
  std::vector<float> row(vocab);
  for (float& x : row) x = normal(rng);
  return row;
}

TEST(SelfContrastTest, SpecAppendixAVectors) {
  const SelfContrastParams params{/*alpha=*/0.1f, /*beta=*/0.5f};
  std::vector<float> scores;
  const std::vector<float> strong1 = {2.0f, 1.9f, 0.3f, -1.0f}, weak1 = {2.5f, 1.0f, 0.2f, -0.5f};
  SelfContrastScores(strong1, weak1, 1.f, params, {}, &scores);
  ASSERT_EQ(scores.size(), 4u);
  EXPECT_NEAR(scores[0], 1.75f, 1e-6f);
  EXPECT_NEAR(scores[1], 2.35f, 1e-6f);
  EXPECT_NEAR(scores[2], 0.35f, 1e-6f);
  EXPECT_EQ(scores[3], -kInf);
  EXPECT_EQ(SelfContrastGreedy(strong1, weak1, params, {}), 1);
  EXPECT_EQ(ArgMax(strong1), 0);  // plain greedy would say 0

  // Token 1's unmasked contrast score would be 1.5: the plausibility mask removes it.
  const std::vector<float> strong2 = {2.0f, -1.0f, 0.5f}, weak2 = {3.5f, -6.0f, 0.4f};
  SelfContrastScores(strong2, weak2, 1.f, params, {}, &scores);
  EXPECT_NEAR(scores[0], 1.25f, 1e-6f);
  EXPECT_EQ(scores[1], -kInf);
  EXPECT_NEAR(scores[2], 0.55f, 1e-6f);
  EXPECT_EQ(SelfContrastGreedy(strong2, weak2, params, {}), 0);
}

TEST(SelfContrastTest, BetaZeroOrAlphaOneIsGreedyOnTheStrongPass) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const std::vector<float> strong = RandomRow(rng, 97), weak = RandomRow(rng, 97);
    EXPECT_EQ(SelfContrastGreedy(strong, weak, {0.1f, 0.f}, {}), ArgMax(strong));
    EXPECT_EQ(SelfContrastGreedy(strong, weak, {1.f, 0.9f}, {}), ArgMax(strong));
  }
}

TEST(SelfContrastTest, AConstantAddedToEitherPassChangesNoChoice) {
  std::mt19937 rng(11);
  const SelfContrastParams params{0.1f, 0.7f};
  for (int trial = 0; trial < 200; ++trial) {
    const std::vector<float> strong = RandomRow(rng, 64), weak = RandomRow(rng, 64);
    const int32_t chosen = SelfContrastGreedy(strong, weak, params, {});
    std::vector<float> strong_up = strong, weak_up = weak;
    for (float& x : strong_up) x += 3.25f;
    for (float& x : weak_up) x -= 11.5f;
    EXPECT_EQ(SelfContrastGreedy(strong_up, weak, params, {}), chosen);
    EXPECT_EQ(SelfContrastGreedy(strong, weak_up, params, {}), chosen);
  }
}

TEST(SelfContrastTest, TiesGoToTheLowestIdAndAnEntryAtTheCutoffIsKept) {
  // Tokens 1 and 3 score the same: the lowest id wins.
  const std::vector<float> strong = {0.f, 1.f, -5.f, 1.f}, weak = {0.f, 0.f, 0.f, 0.f};
  EXPECT_EQ(SelfContrastGreedy(strong, weak, {0.1f, 0.5f}, {}), 1);
  // alpha = e^-1: token 1 sits exactly at the cutoff (s = max - 1) and is kept.
  std::vector<float> scores;
  const std::vector<float> at_cutoff = {1.f, 0.f}, zeros = {0.f, 0.f};
  SelfContrastScores(at_cutoff, zeros, 1.f, {std::exp(-1.f), 0.5f}, {}, &scores);
  EXPECT_TRUE(std::isfinite(scores[1])) << scores[1];
}

TEST(SelfContrastTest, TheTemperatureScalesBeforeTheCutoff) {
  // ln(0.1) = -2.30: at T = 1 token 1 (s = 0 against a max of 2.5) is masked; at T = 2 it
  // is s = 0 against 1.25 and kept. Its weak logit makes it the contrast's choice.
  const std::vector<float> strong = {2.5f, 0.f}, weak = {6.f, -4.f};
  std::vector<float> scores;
  SelfContrastScores(strong, weak, 1.f, {0.1f, 0.5f}, {}, &scores);
  EXPECT_EQ(scores[1], -kInf);
  SelfContrastScores(strong, weak, 2.f, {0.1f, 0.5f}, {}, &scores);
  ASSERT_TRUE(std::isfinite(scores[1]));
  EXPECT_NEAR(scores[0], 1.5f * 1.25f - 0.5f * 3.f, 1e-6f);
  EXPECT_NEAR(scores[1], 0.f - 0.5f * -2.f, 1e-6f);
  EXPECT_EQ(ArgMax(scores), 1);
  // T = 0 (greedy) scales by 1, like T = 1.
  std::vector<float> greedy;
  SelfContrastScores(strong, weak, 0.f, {0.1f, 0.5f}, {}, &greedy);
  SelfContrastScores(strong, weak, 1.f, {0.1f, 0.5f}, {}, &scores);
  EXPECT_EQ(greedy, scores);
}

TEST(SelfContrastTest, AllMaskedButOneLeavesAOneHotRow) {
  std::vector<float> scores;
  const std::vector<float> strong = {0.f, 9.f, 1.f, 2.f}, weak = {5.f, 8.f, -1.f, 0.f};
  SelfContrastScores(strong, weak, 1.f, {1.f, 0.5f}, {}, &scores);
  int finite = 0;
  for (float s : scores) finite += std::isfinite(s);
  EXPECT_EQ(finite, 1);
  EXPECT_TRUE(std::isfinite(scores[1]));
}

TEST(SelfContrastTest, BanEosRemovesItAndFallsBackWhenNothingElseIsPlausible) {
  const std::vector<int32_t> eos = {2};
  std::vector<float> scores;
  // EOS (2) would win; banned, the contrast's next choice does.
  const std::vector<float> strong = {1.8f, 1.9f, 2.0f}, weak = {1.0f, 2.5f, 0.f};
  EXPECT_EQ(SelfContrastGreedy(strong, weak, {0.1f, 0.5f, 2, /*ban_eos=*/false}, eos), 2);
  EXPECT_EQ(SelfContrastGreedy(strong, weak, {0.1f, 0.5f, 2, /*ban_eos=*/true}, eos), 0);
  // alpha = 1 leaves only EOS plausible: banned, the best non-EOS token of s is the one.
  SelfContrastScores(strong, weak, 1.f, {1.f, 0.5f, 2, true}, eos, &scores);
  EXPECT_EQ(scores[2], -kInf);
  EXPECT_EQ(scores[0], -kInf);
  EXPECT_TRUE(std::isfinite(scores[1]));
  EXPECT_EQ(SelfContrastGreedy(strong, weak, {1.f, 0.5f, 2, true}, eos), 1);
}

// The scheduler samples an SCMoE pair's scores with the request's top-k/top-p at
// temperature 1 (the scores already carry T): a masked token is never drawn, the draws
// follow softmax(score), and a seeded stream repeats itself.
TEST(SelfContrastTest, SamplingTheScoresNeverDrawsAMaskedToken) {
  const std::vector<float> strong = {2.0f, 1.9f, 0.3f, -1.0f, 1.95f};
  const std::vector<float> weak = {2.5f, 1.0f, 0.2f, -0.5f, 3.0f};
  std::vector<float> scores;
  SelfContrastScores(strong, weak, 0.7f, {0.1f, 0.5f, 2, false}, {}, &scores);
  ASSERT_EQ(scores[3], -kInf);  // below the cutoff
  for (float top_p : {1.f, 0.95f}) {
    SamplingParams p;
    p.temperature = 1.f;
    p.top_p = top_p;
    p.seed = 5;
    Sampler a(p), b(p);
    std::vector<int> counts(5, 0);
    for (int i = 0; i < 4000; ++i) {
      const int32_t t = a.Sample(scores);
      ASSERT_EQ(t, b.Sample(scores));
      ASSERT_TRUE(t >= 0 && t < 5 && std::isfinite(scores[t])) << t;
      ++counts[t];
    }
    // Token 1 has the highest score (the contrast favours it over token 0).
    EXPECT_GT(counts[1], counts[0]);
    EXPECT_GT(counts[1], counts[4]);
  }
}

TEST(SelfContrastTest, ValidationNamesTheField) {
  EXPECT_TRUE(SelfContrastParams{}.Validate(8).ok());
  const absl::Status no_experts = SelfContrastParams{}.Validate(0);
  EXPECT_EQ(no_experts.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_experts.message().find("no routed experts"), std::string::npos);
  EXPECT_TRUE((SelfContrastParams{1.f, 0.f, 8}).Validate(8).ok());
  const struct {
    SelfContrastParams params;
    const char* field;
  } bad[] = {
      {{0.1f, -0.1f, 2}, "beta"},     {{0.1f, std::nanf(""), 2}, "beta"},
      {{0.1f, kInf, 2}, "beta"},      {{0.f, 0.5f, 2}, "alpha"},
      {{1.5f, 0.5f, 2}, "alpha"},     {{std::nanf(""), 0.5f, 2}, "alpha"},
      {{0.1f, 0.5f, 0}, "weak_rank"}, {{0.1f, 0.5f, 9}, "weak_rank"},
  };
  for (const auto& [params, field] : bad) {
    absl::Status status = params.Validate(8);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(status.message().find(std::string("self_contrast.") + field), std::string::npos)
        << status.message();
  }
}

}  // namespace
}  // namespace moe
