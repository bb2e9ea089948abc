// Dispatch, expert FFN and combine against a naive token-by-token MoE written here, with
// fp32 and bf16 expert weights, on every instruction set this CPU has.
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

// The MoE layer for one token, expert by expert, in plain loops.
void NaiveMoe(const std::vector<float>& x, const std::vector<int32_t>& ids,
              const std::vector<float>& w, const std::vector<std::vector<float>>& gate_up,
              const std::vector<std::vector<float>>& down, int T, int K, int H, int I,
              std::vector<float>* out) {
  out->assign(static_cast<size_t>(T) * H, 0.f);
  std::vector<double> act(I);
  for (int t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int e = ids[t * K + j];
      if (e < 0) continue;
      for (int i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int h = 0; h < H; ++h) {
          g += gate_up[e][static_cast<size_t>(i) * H + h] * x[static_cast<size_t>(t) * H + h];
          u += gate_up[e][static_cast<size_t>(I + i) * H + h] * x[static_cast<size_t>(t) * H + h];
        }
        act[i] = g / (1 + std::exp(-g)) * u;
      }
      for (int h = 0; h < H; ++h) {
        double y = 0;
        for (int i = 0; i < I; ++i) y += down[e][static_cast<size_t>(h) * I + i] * act[i];
        (*out)[static_cast<size_t>(t) * H + h] += static_cast<float>(w[t * K + j] * y);
      }
    }
  }
}

struct MoeCase {
  int T, H, I, E, K;
};

// A row-major [rows, cols] matrix in the CPU GEMM's packed layout, and the values the
// kernel reads (bf16-rounded for bf16).
struct Packed {
  std::vector<char> bytes;
  MatrixRef ref;
};

Packed PackMatrix(std::vector<float>* w, int64_t rows, int64_t cols, DType dtype) {
  if (dtype == DType::kBF16) {
    for (float& f : *w) f = Bf16ToFloat(FloatToBf16(f));
  }
  Packed p;
  p.bytes.resize(MatrixBytes(dtype, WeightLayout::kPanels16, rows, cols));
  PackSource src{w->data(), SourceType::kF32, rows};
  PackPanels(std::span(&src, 1), cols, dtype, p.bytes.data());
  p.ref = {p.bytes.data(), dtype, WeightLayout::kPanels16, rows, cols};
  return p;
}

class ExpertFfnTest : public testing::TestWithParam<std::tuple<MoeCase, DType, Isa>> {
 protected:
  void SetUp() override { ASSERT_TRUE(SetIsa(std::get<2>(GetParam())).ok()); }
  void TearDown() override { (void)SetIsa(BestIsa()); }
};

TEST_P(ExpertFfnTest, MatchesNaiveTokenByToken) {
  const MoeCase c = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  std::mt19937 rng(c.T * 131 + c.E);
  std::vector<float> x = Random(static_cast<size_t>(c.T) * c.H, rng);
  std::vector<float> logits = Random(static_cast<size_t>(c.T) * c.E, rng, 2.f);
  std::vector<std::vector<float>> gate_up, down;
  std::vector<Packed> packed_gu, packed_dn;
  for (int e = 0; e < c.E; ++e) {
    gate_up.push_back(Random(static_cast<size_t>(2) * c.I * c.H, rng, 0.2f));
    down.push_back(Random(static_cast<size_t>(c.H) * c.I, rng, 0.2f));
    packed_gu.push_back(PackMatrix(&gate_up.back(), 2 * c.I, c.H, dtype));
    packed_dn.push_back(PackMatrix(&down.back(), c.H, c.I, dtype));
  }
  std::vector<MatrixRef> gu_ref, dn_ref;
  for (int e = 0; e < c.E; ++e) {
    gu_ref.push_back(packed_gu[e].ref);
    dn_ref.push_back(packed_dn[e].ref);
  }
  const size_t P = static_cast<size_t>(c.T) * c.K;
  std::vector<int32_t> ids(P);
  std::vector<float> w(P);
  GatingParams gp;
  gp.router_logits = logits.data();
  gp.num_tokens = c.T;
  gp.num_experts = c.E;
  gp.top_k = c.K;
  gp.renormalize = true;
  gp.topk_ids = ids.data();
  gp.topk_weights = w.data();
  Gating(gp);
  std::vector<int32_t> offsets(c.E + 1), sorted(P), inverse(P);
  Dispatch({ids.data(), c.T, c.K, c.E, offsets.data(), sorted.data(), inverse.data()});

  std::vector<float> ws_x(P * c.H, kPoison), ws_gu(P * 2 * c.I, kPoison), ws_act(P * c.I, kPoison),
      y(P * c.H, kPoison), out(static_cast<size_t>(c.T) * c.H, kPoison);
  ExpertFfnParams ep;
  ep.x = x.data();
  ep.sorted_pairs = sorted.data();
  ep.expert_offsets = offsets.data();
  ep.num_tokens = c.T;
  ep.top_k = c.K;
  ep.num_experts = c.E;
  ep.hidden = c.H;
  ep.inter = c.I;
  ep.w_gate_up = gu_ref.data();
  ep.w_down = dn_ref.data();
  ep.ws_x = ws_x.data();
  ep.ws_gate_up = ws_gu.data();
  ep.ws_act = ws_act.data();
  ep.y = y.data();
  ASSERT_TRUE(CanImplement(ep).ok());
  ExpertFfn(ep);
  Combine({y.data(), inverse.data(), w.data(), c.T, c.K, c.H, out.data()});

  std::vector<float> want;
  NaiveMoe(x, ids, w, gate_up, down, c.T, c.K, c.H, c.I, &want);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(out[i], want[i], 1e-4f * (1.f + std::fabs(want[i]))) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExpertFfnTest,
    testing::Combine(testing::Values(MoeCase{1, 16, 8, 4, 2}, MoeCase{7, 32, 24, 8, 2},
                                     MoeCase{64, 48, 32, 16, 4}, MoeCase{33, 64, 16, 8, 8},
                                     MoeCase{20, 40, 24, 6, 3}),
                     testing::Values(DType::kF32, DType::kBF16),
                     testing::ValuesIn(SupportedIsas())),
    [](const testing::TestParamInfo<std::tuple<MoeCase, DType, Isa>>& info) {
      const MoeCase& c = std::get<0>(info.param);
      return testing::PrintToString(c.T) + "x" + testing::PrintToString(c.H) + "_E" +
             testing::PrintToString(c.E) + "K" + testing::PrintToString(c.K) + "_" +
             (std::get<1>(info.param) == DType::kBF16 ? "bf16" : "f32") + "_" +
             IsaName(std::get<2>(info.param));
    });

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
