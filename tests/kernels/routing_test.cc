// Routing against the test vectors of shared/specs/moe_algorithms.md Appendix A
// (produced by shared/specs/ref_routing.py, not by this code).
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/cpu/moe.h"

namespace moe::kernels::cpu {
namespace {

const std::vector<float> kL8 = {1.2f, -0.3f, 2.5f, 0.7f, -1.1f, 2.1f, 0.05f, -0.6f};

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

struct Override {
  int32_t weak_rank = 0;
  int32_t top_k = 0;
  float top_p = 0.f;
  int slots = 0;
};

Routed Route(const std::vector<float>& logits, int k, bool renorm, Override o) {
  const int slots = o.slots > 0 ? o.slots : k;
  Routed r;
  r.ids.assign(slots, 12345);  // poisoned
  r.weights.assign(slots, -7.f);
  GatingParams p;
  p.router_logits = logits.data();
  p.num_tokens = 1;
  p.num_experts = static_cast<int>(logits.size());
  p.top_k = k;
  p.slots = o.slots;
  p.renormalize = renorm;
  p.weak_rank = o.weak_rank != 0 ? &o.weak_rank : nullptr;
  p.route_top_k = o.top_k != 0 ? &o.top_k : nullptr;
  p.route_top_p = o.top_p != 0.f ? &o.top_p : nullptr;
  p.topk_ids = r.ids.data();
  p.topk_weights = r.weights.data();
  EXPECT_TRUE(CanImplement(p).ok());
  Gating(p);
  return r;
}

Routed Route(const std::vector<float>& logits, int k, bool renorm, int32_t weak_rank = 0) {
  return Route(logits, k, renorm, Override{.weak_rank = weak_rank});
}

TEST(RoutingTest, MixtralTop2) {
  Routed r = Route(kL8, 2, /*renorm=*/true);
  EXPECT_THAT(r.ids, testing::ElementsAre(2, 5));
  EXPECT_NEAR(r.weights[0], 0.598688, 1e-6);
  EXPECT_NEAR(r.weights[1], 0.401312, 1e-6);
}

TEST(RoutingTest, SoftmaxTop4WithoutRenormalisation) {
  Routed r = Route(kL8, 4, /*renorm=*/false);
  EXPECT_THAT(r.ids, testing::ElementsAre(2, 5, 0, 3));
  const double want[] = {0.429622, 0.287984, 0.117086, 0.071016};
  double sum = 0;
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(r.weights[j], want[j], 1e-6);
    sum += r.weights[j];
  }
  EXPECT_LT(sum, 1.0);  // Qwen/OLMoE with norm_topk_prob=false: sum of the top-k mass
}

TEST(RoutingTest, SoftmaxTop4WithRenormalisation) {
  Routed r = Route(kL8, 4, /*renorm=*/true);
  EXPECT_THAT(r.ids, testing::ElementsAre(2, 5, 0, 3));
  const double want[] = {0.474349, 0.317966, 0.129275, 0.078409};
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(r.weights[j], want[j], 1e-6);
}

TEST(RoutingTest, WeakRankRoutingPicksOneExpertWithWeightOne) {
  // Sorted experts of L8: [2, 5, 0, 3, 6, 1, 7, 4].
  const int32_t want[] = {2, 5, 0, 3, 6, 1, 7, 4};
  for (int32_t rank = 1; rank <= 8; ++rank) {
    Routed r = Route(kL8, 2, /*renorm=*/true, rank);
    EXPECT_EQ(r.ids[0], want[rank - 1]) << "rank " << rank;
    EXPECT_EQ(r.weights[0], 1.f);
    EXPECT_EQ(r.ids[1], -1);
    EXPECT_EQ(r.weights[1], 0.f);
  }
}

TEST(RoutingTest, WeakRankWeighsItsRawProbabilityWhereTheModelDoesNotRenormalize) {
  // Qwen2-MoE and OLMoE (norm_topk_prob false): the rank-r expert keeps softmax p.
  Routed r = Route(kL8, 4, /*renorm=*/false, 2);
  EXPECT_THAT(r.ids, testing::ElementsAre(5, -1, -1, -1));
  EXPECT_NEAR(r.weights[0], 0.287984, 1e-6);
  EXPECT_THAT(std::vector<float>(r.weights.begin() + 1, r.weights.end()), testing::Each(0.f));
}

// Appendix A, "top-p p=0.4".
TEST(RoutingTest, TopPTakesTheSmallestPrefixWhoseMassExceedsP) {
  Routed a = Route(kL8, 2, /*renorm=*/true, Override{.top_p = 0.4f, .slots = 8});
  EXPECT_THAT(a.ids, testing::ElementsAre(2, -1, -1, -1, -1, -1, -1, -1));
  EXPECT_NEAR(a.weights[0], 0.429622, 1e-6);  // raw, even though the model renormalizes

  Routed b = Route({4.0f, 0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, 2, /*renorm=*/false,
                   Override{.top_p = 0.4f, .slots = 8});
  EXPECT_EQ(b.ids[0], 0);
  EXPECT_EQ(b.ids[1], -1);
  EXPECT_NEAR(b.weights[0], 0.849945, 1e-6);

  Routed c = Route({0.f, 0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f, 0.07f}, 2, /*renorm=*/true,
                   Override{.top_p = 0.4f, .slots = 8});
  EXPECT_THAT(c.ids, testing::ElementsAre(7, 6, 5, 4, -1, -1, -1, -1));
  const double want[] = {0.129418, 0.128131, 0.126856, 0.125594};
  double mass = 0;
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(c.weights[j], want[j], 1e-6);
    mass += c.weights[j];
  }
  EXPECT_GT(mass, 0.4);
  EXPECT_LE(mass - c.weights[3], 0.4);
}

TEST(RoutingTest, TopPOfOneUsesEveryExpertWhenNoPrefixExceedsIt) {
  // The mass of all 8 rounds to 1 or just under it: either way no prefix exceeds 1.0 but
  // the last, or none does, and then all E are used (specs 4.1's edge case).
  Routed r = Route(kL8, 2, /*renorm=*/false, Override{.top_p = 1.f, .slots = 8});
  EXPECT_THAT(r.ids, testing::ElementsAre(2, 5, 0, 3, 6, 1, 7, 4));
  for (int j = 0; j + 1 < 8; ++j) EXPECT_GE(r.weights[j], r.weights[j + 1]);
}

TEST(RoutingTest, TopKOverrideRenormalizesAsTheModelDoes) {
  Routed more = Route(kL8, 2, /*renorm=*/true, Override{.top_k = 4, .slots = 4});
  EXPECT_THAT(more.ids, testing::ElementsAre(2, 5, 0, 3));
  const double want[] = {0.474349, 0.317966, 0.129275, 0.078409};
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(more.weights[j], want[j], 1e-6);

  Routed raw = Route(kL8, 4, /*renorm=*/false, Override{.top_k = 1});
  EXPECT_THAT(raw.ids, testing::ElementsAre(2, -1, -1, -1));
  EXPECT_NEAR(raw.weights[0], 0.429622, 1e-6);

  Routed one = Route(kL8, 2, /*renorm=*/true, Override{.top_k = 1});
  EXPECT_THAT(one.ids, testing::ElementsAre(2, -1));
  EXPECT_EQ(one.weights[0], 1.f);
}

TEST(RoutingTest, WeakRankWinsOverTopKAndTopKOverTopP) {
  const int32_t weak = 3, top_k = 2;
  const float top_p = 0.9f;
  std::vector<int32_t> ids(8);
  std::vector<float> w(8);
  GatingParams p;
  p.router_logits = kL8.data();
  p.num_tokens = 1;
  p.num_experts = 8;
  p.top_k = 2;
  p.slots = 8;
  p.renormalize = true;
  p.weak_rank = &weak;
  p.route_top_k = &top_k;
  p.route_top_p = &top_p;
  p.topk_ids = ids.data();
  p.topk_weights = w.data();
  Gating(p);
  EXPECT_THAT(ids, testing::ElementsAre(0, -1, -1, -1, -1, -1, -1, -1));
  p.weak_rank = nullptr;
  Gating(p);
  EXPECT_THAT(ids, testing::ElementsAre(2, 5, -1, -1, -1, -1, -1, -1));
}

TEST(RoutingTest, OverridesThatDoNotFitTheSlotsAreRefused) {
  std::vector<int32_t> ids(8);
  std::vector<float> w(8);
  int32_t top_k = 3;
  float top_p = 0.5f;
  GatingParams p;
  p.router_logits = kL8.data();
  p.num_tokens = 1;
  p.num_experts = 8;
  p.top_k = 2;
  p.topk_ids = ids.data();
  p.topk_weights = w.data();
  p.route_top_k = &top_k;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);  // 3 > slots 2
  p.slots = 3;
  EXPECT_TRUE(CanImplement(p).ok());
  p.route_top_k = nullptr;
  p.route_top_p = &top_p;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);  // needs slots E
  p.slots = 8;
  EXPECT_TRUE(CanImplement(p).ok());
  p.slots = 9;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
  p.slots = 1;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);  // < K
}

TEST(RoutingTest, TiesGoToTheLowerExpertId) {
  Routed r = Route({0.5f, 1.f, 1.f, 1.f}, 2, /*renorm=*/true);
  EXPECT_THAT(r.ids, testing::ElementsAre(1, 2));
  EXPECT_FLOAT_EQ(r.weights[0], 0.5f);
}

TEST(RoutingTest, ManyTokensRouteIndependently) {
  std::vector<float> logits = kL8;
  std::vector<float> reversed(kL8.rbegin(), kL8.rend());
  logits.insert(logits.end(), reversed.begin(), reversed.end());
  std::vector<int32_t> ids(4);
  std::vector<float> w(4);
  GatingParams p;
  p.router_logits = logits.data();
  p.num_tokens = 2;
  p.num_experts = 8;
  p.top_k = 2;
  p.renormalize = true;
  p.topk_ids = ids.data();
  p.topk_weights = w.data();
  Gating(p);
  EXPECT_THAT(ids, testing::ElementsAre(2, 5, 5, 2));  // reversed: expert e -> 7 - e
  EXPECT_NEAR(w[2], 0.598688, 1e-6);
}

TEST(RoutingTest, CanImplementRejectsBadShapes) {
  std::vector<float> logits(8);
  std::vector<int32_t> ids(16);
  std::vector<float> w(16);
  GatingParams p;
  p.router_logits = logits.data();
  p.num_tokens = 1;
  p.num_experts = 8;
  p.top_k = 9;
  p.topk_ids = ids.data();
  p.topk_weights = w.data();
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
  p.top_k = 0;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
  p.top_k = 2;
  p.num_experts = kMaxExperts + 1;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
  p.num_experts = 8;
  p.topk_ids = nullptr;
  EXPECT_EQ(CanImplement(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::kernels::cpu
