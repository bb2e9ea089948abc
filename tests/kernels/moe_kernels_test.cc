// Dispatch's stable counting sort and the expert FFN's limits. The expert FFN's and the
// combine's arithmetic is tested through the MoE layer function that wires them
// (tests/engine/moe_layer_test.cc).
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "tests/kernels/kernels_test_util.h"

namespace moe::kernels::cpu {
namespace {

TEST(DispatchTest, StableCountingSortGroupsPairsByExpert) {
  std::mt19937 rng(7);
  const int T = 57, K = 3, E = 9;
  std::vector<int32_t> ids(T * K);
  std::uniform_int_distribution<int> pick(-1, E - 1);  // -1: unused slot
  for (int32_t& id : ids) id = pick(rng);
  std::vector<int32_t> offsets(E + 1, -5), sorted(T * K, -5), inverse(T * K, -5);
  DispatchParams p{ids.data(), T, K, E, offsets.data(), sorted.data(), inverse.data()};
  ASSERT_TRUE(CanImplement(p).ok());
  Dispatch(p);

  int used = 0;
  for (int32_t id : ids) used += id >= 0;
  ASSERT_EQ(offsets[0], 0);
  ASSERT_EQ(offsets[E], used);
  for (int e = 0; e < E; ++e) {
    int count = 0;
    for (int32_t id : ids) count += id == e;
    EXPECT_EQ(offsets[e + 1] - offsets[e], count) << "expert " << e;
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      EXPECT_EQ(ids[sorted[r]], e);
      if (r > offsets[e]) {
        EXPECT_LT(sorted[r - 1], sorted[r]) << "not stable";
      }
    }
  }
  for (int i = 0; i < T * K; ++i) {
    if (ids[i] < 0) {
      EXPECT_EQ(inverse[i], -1);
    } else {
      EXPECT_EQ(sorted[inverse[i]], i);
    }
  }
}

TEST(ExpertFfnLimitsTest, RejectsExpertWithRowsButNoWeights) {
  std::vector<float> buf(64);
  std::vector<int32_t> offsets = {0, 1, 1};
  std::vector<int32_t> sorted = {0};
  MatrixRef gu[2], dn[2];
  for (int e = 0; e < 2; ++e) {
    gu[e] = {buf.data(), DType::kF32, WeightLayout::kPanels16, 4, 4};
    dn[e] = {buf.data(), DType::kF32, WeightLayout::kPanels16, 4, 2};
  }
  gu[0].data = nullptr;
  ExpertFfnParams ep;
  ep.x = ep.ws_x = ep.ws_gate_up = ep.ws_act = ep.y = buf.data();
  ep.sorted_pairs = sorted.data();
  ep.expert_offsets = offsets.data();
  ep.num_tokens = 1;
  ep.top_k = 1;
  ep.num_experts = 2;
  ep.hidden = 4;
  ep.inter = 2;
  ep.w_gate_up = gu;
  ep.w_down = dn;
  EXPECT_EQ(CanImplement(ep).code(), absl::StatusCode::kInvalidArgument);
  gu[0].data = buf.data();
  gu[1].data = nullptr;  // expert 1 has no rows: its weights are never read
  EXPECT_TRUE(CanImplement(ep).ok());
  dn[0].layout = WeightLayout::kRowMajor;  // the CPU reads packed weights only
  EXPECT_EQ(CanImplement(ep).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::kernels::cpu
