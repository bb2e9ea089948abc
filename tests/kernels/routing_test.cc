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

Routed Route(const std::vector<float>& logits, int k, bool renorm, int32_t weak_rank = 0) {
  Routed r;
  r.ids.assign(k, 12345);  // poisoned
  r.weights.assign(k, -7.f);
  GatingParams p;
  p.router_logits = logits.data();
  p.num_tokens = 1;
  p.num_experts = static_cast<int>(logits.size());
  p.top_k = k;
  p.renormalize = renorm;
  p.weak_rank = weak_rank != 0 ? &weak_rank : nullptr;
  p.topk_ids = r.ids.data();
  p.topk_weights = r.weights.data();
  EXPECT_TRUE(CanImplement(p).ok());
  Gating(p);
  return r;
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
