// The MoE layer function (engine/moe_layer.h) on the CPU backend, with fp32 and bf16
// weights and on every instruction set of the CPU, against a naive token-by-token layer in
// double precision written here: router logits, softmax, top-k, each chosen expert's
// SwiGLU FFN, the weighted sum, and the Qwen2-MoE sigmoid-gated shared expert. Also the
// SCMoE per-token rank override, tokens per expert, and a row's bit-identity alone or in
// a batch.
#include "engine/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "engine/cpu_backend.h"
#include "kernels/cpu/gemm.h"
#include "tests/kernels/kernels_test_util.h"

namespace moe {
namespace {

using kernels::DType;
using kernels::MatrixRef;
using kernels::WeightLayout;
using kernels::cpu::Isa;

struct MoeCase {
  int T, H, I, E, K;
  bool renormalize;
  int shared_inter;  // 0: none
};

// A row-major [rows, cols] matrix (rounded to bf16 in place for bf16), packed.
struct Packed {
  std::vector<char> bytes;
  MatrixRef ref;
};

Packed Pack(std::vector<float>* w, int64_t rows, int64_t cols, DType dtype) {
  if (dtype == DType::kBF16) {
    for (float& f : *w) f = kernels::cpu::Bf16ToFloat(kernels::cpu::FloatToBf16(f));
  }
  Packed p;
  p.bytes.resize(kernels::MatrixBytes(dtype, WeightLayout::kPanels16, rows, cols));
  const kernels::cpu::PackSource src{w->data(), kernels::cpu::SourceType::kF32, rows};
  kernels::cpu::PackPanels(std::span(&src, 1), cols, dtype, p.bytes.data());
  p.ref = {p.bytes.data(), dtype, WeightLayout::kPanels16, rows, cols};
  return p;
}

// A layer's weights, both as the layer function reads them and as plain arrays.
struct Layer {
  MoeCase c;
  std::vector<float> router, shared_gu, shared_dn, shared_gate;
  std::vector<std::vector<float>> gu, dn;
  std::vector<Packed> packed;
  MoeLayerSpec spec;
  std::unique_ptr<ResidentExperts> experts;
};

Layer MakeLayer(const MoeCase& c, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  Layer l;
  l.c = c;
  l.router = kernels::cpu::Random(static_cast<size_t>(c.E) * c.H, rng, 0.5f);
  l.packed.reserve(3 + 2 * c.E);
  l.packed.push_back(Pack(&l.router, c.E, c.H, dtype));
  l.spec.hidden = c.H;
  l.spec.inter = c.I;
  l.spec.num_experts = c.E;
  l.spec.top_k = c.K;
  l.spec.renormalize = c.renormalize;
  l.spec.router = l.packed.back().ref;
  std::vector<std::vector<MatrixRef>> gu(1), dn(1);
  for (int e = 0; e < c.E; ++e) {
    l.gu.push_back(kernels::cpu::Random(size_t{2} * c.I * c.H, rng, 0.2f));
    l.dn.push_back(kernels::cpu::Random(size_t{1} * c.H * c.I, rng, 0.2f));
    l.packed.push_back(Pack(&l.gu.back(), 2 * c.I, c.H, dtype));
    gu[0].push_back(l.packed.back().ref);
    l.packed.push_back(Pack(&l.dn.back(), c.H, c.I, dtype));
    dn[0].push_back(l.packed.back().ref);
  }
  l.experts = std::make_unique<ResidentExperts>(gu, dn);
  if (c.shared_inter > 0) {
    const int Is = c.shared_inter;
    l.shared_gu = kernels::cpu::Random(size_t{2} * Is * c.H, rng, 0.2f);
    l.shared_dn = kernels::cpu::Random(size_t{1} * c.H * Is, rng, 0.2f);
    l.shared_gate = kernels::cpu::Random(c.H, rng, 0.5f);
    l.spec.shared_inter = Is;
    l.packed.push_back(Pack(&l.shared_gu, 2 * Is, c.H, dtype));
    l.spec.shared_gate_up = l.packed.back().ref;
    l.packed.push_back(Pack(&l.shared_dn, c.H, Is, dtype));
    l.spec.shared_down = l.packed.back().ref;
    l.packed.push_back(Pack(&l.shared_gate, 1, c.H, dtype));
    l.spec.shared_gate = l.packed.back().ref;
  }
  return l;
}

// SwiGLU of [2I, H] / [H, I] weights on one row, in double.
std::vector<double> Ffn(const std::vector<float>& gu, const std::vector<float>& dn, const float* x,
                        int H, int I) {
  std::vector<double> act(I), y(H, 0.0);
  for (int i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (int h = 0; h < H; ++h) {
      g += static_cast<double>(gu[static_cast<size_t>(i) * H + h]) * x[h];
      u += static_cast<double>(gu[static_cast<size_t>(I + i) * H + h]) * x[h];
    }
    act[i] = g / (1 + std::exp(-g)) * u;
  }
  for (int h = 0; h < H; ++h) {
    for (int i = 0; i < I; ++i) y[h] += dn[static_cast<size_t>(h) * I + i] * act[i];
  }
  return y;
}

// Per-token overrides as GatingParams takes them; empty vectors: none.
struct Routes {
  std::vector<int32_t> weak, top_k;
  std::vector<float> top_p;
  int slots = 0;
};

// The layer for each token in plain double-precision loops, the overrides as GatingParams
// states them (top-p's cumulative mass in fp32 in rank order, as the kernel sums it).
std::vector<double> Naive(const Layer& l, const std::vector<float>& x, const Routes& routes,
                          std::vector<int32_t>* counts) {
  const MoeCase& c = l.c;
  std::vector<double> out(static_cast<size_t>(c.T) * c.H, 0.0);
  counts->assign(c.E, 0);
  for (int t = 0; t < c.T; ++t) {
    const float* xt = x.data() + static_cast<size_t>(t) * c.H;
    std::vector<double> p(c.E);
    double zmax = -1e300;
    for (int e = 0; e < c.E; ++e) {
      double z = 0;
      for (int h = 0; h < c.H; ++h) z += static_cast<double>(l.router[e * c.H + h]) * xt[h];
      p[e] = z;
      zmax = std::max(zmax, z);
    }
    double sum = 0;
    for (double& v : p) sum += (v = std::exp(v - zmax));
    for (double& v : p) v /= sum;
    std::vector<int> order(c.E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    std::vector<std::pair<int, double>> chosen;
    const int rank = routes.weak.empty() ? 0 : routes.weak[t];
    const int top_k = rank > 0 || routes.top_k.empty() ? 0 : routes.top_k[t];
    const float top_p = rank > 0 || top_k > 0 || routes.top_p.empty() ? 0.f : routes.top_p[t];
    if (rank > 0) {
      const int e = order[rank - 1];
      chosen.push_back({e, c.renormalize ? 1.0 : p[e]});
    } else if (top_p > 0.f) {
      float mass = 0.f;
      for (int j = 0; j < c.E; ++j) {
        chosen.push_back({order[j], p[order[j]]});
        mass += static_cast<float>(p[order[j]]);
        if (mass > top_p) break;
      }
    } else {
      const int n = top_k > 0 ? top_k : c.K;
      double wsum = 0;
      for (int j = 0; j < n; ++j) wsum += p[order[j]];
      for (int j = 0; j < n; ++j) {
        chosen.push_back({order[j], c.renormalize ? p[order[j]] / wsum : p[order[j]]});
      }
    }
    for (auto [e, w] : chosen) {
      ++(*counts)[e];
      const std::vector<double> y = Ffn(l.gu[e], l.dn[e], xt, c.H, c.I);
      for (int h = 0; h < c.H; ++h) out[static_cast<size_t>(t) * c.H + h] += w * y[h];
    }
    if (c.shared_inter > 0) {
      const std::vector<double> y = Ffn(l.shared_gu, l.shared_dn, xt, c.H, c.shared_inter);
      double g = 0;
      for (int h = 0; h < c.H; ++h) g += static_cast<double>(l.shared_gate[h]) * xt[h];
      g = 1 / (1 + std::exp(-g));
      for (int h = 0; h < c.H; ++h) out[static_cast<size_t>(t) * c.H + h] += g * y[h];
    }
  }
  return out;
}

std::vector<float> RunLayer(const Layer& l, const std::vector<float>& x, int T,
                            const Routes& routes, std::vector<int32_t>* counts) {
  CpuBackend backend;
  Workspace ws(&backend);
  std::vector<float> out(static_cast<size_t>(T) * l.c.H, kernels::cpu::kPoison);
  counts->assign(l.c.E, -1);
  TokenRouting routing;
  routing.weak_rank = routes.weak.empty() ? nullptr : routes.weak.data();
  routing.top_k = routes.top_k.empty() ? nullptr : routes.top_k.data();
  routing.top_p = routes.top_p.empty() ? nullptr : routes.top_p.data();
  routing.slots = routes.slots;
  const bool any = routing.weak_rank || routing.top_k || routing.top_p;
  const absl::Status s = RunMoeLayer(backend, l.spec, *l.experts, 0, x.data(), T,
                                     any ? &routing : nullptr, ws, out.data(), counts->data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

class MoeLayerTest : public testing::TestWithParam<std::tuple<MoeCase, DType, Isa>> {
 protected:
  void SetUp() override { ASSERT_TRUE(kernels::cpu::SetIsa(std::get<2>(GetParam())).ok()); }
  void TearDown() override { (void)kernels::cpu::SetIsa(kernels::cpu::BestIsa()); }
};

TEST_P(MoeLayerTest, MatchesNaiveTokenByToken) {
  const MoeCase c = std::get<0>(GetParam());
  const Layer l = MakeLayer(c, std::get<1>(GetParam()), c.T * 131 + c.E);
  std::mt19937 rng(c.T);
  const std::vector<float> x = kernels::cpu::Random(static_cast<size_t>(c.T) * c.H, rng);
  std::vector<int32_t> got_counts, want_counts;
  const std::vector<float> got = RunLayer(l, x, c.T, {}, &got_counts);
  const std::vector<double> want = Naive(l, x, {}, &want_counts);
  EXPECT_EQ(got_counts, want_counts);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-4 * (1.0 + std::fabs(want[i]))) << "element " << i;
  }
}

TEST_P(MoeLayerTest, WeakRankRoutesEachTokenToItsRankedExpertAlone) {
  const MoeCase c = std::get<0>(GetParam());
  const Layer l = MakeLayer(c, std::get<1>(GetParam()), 7 + c.E);
  std::mt19937 rng(c.T + 1);
  const std::vector<float> x = kernels::cpu::Random(static_cast<size_t>(c.T) * c.H, rng);
  Routes weak;
  weak.weak.resize(c.T);
  for (int t = 0; t < c.T; ++t) weak.weak[t] = t % 3 == 0 ? 0 : 1 + t % c.E;  // some strong
  std::vector<int32_t> got_counts, want_counts;
  const std::vector<float> got = RunLayer(l, x, c.T, weak, &got_counts);
  const std::vector<double> want = Naive(l, x, weak, &want_counts);
  EXPECT_EQ(got_counts, want_counts);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-4 * (1.0 + std::fabs(want[i]))) << "element " << i;
  }
}

// Per-request routing in one batch: plain tokens, weak ranks, top-k from 1 to E and top-p
// thresholds side by side, each routed as its own override says.
TEST_P(MoeLayerTest, EachTokenIsRoutedAsItsOverrideSays) {
  const MoeCase c = std::get<0>(GetParam());
  const Layer l = MakeLayer(c, std::get<1>(GetParam()), 11 + c.E);
  std::mt19937 rng(c.T + 2);
  const std::vector<float> x = kernels::cpu::Random(static_cast<size_t>(c.T) * c.H, rng);
  Routes routes;
  routes.weak.assign(c.T, 0);
  routes.top_k.assign(c.T, 0);
  routes.top_p.assign(c.T, 0.f);
  routes.slots = c.E;
  for (int t = 0; t < c.T; ++t) {
    switch (t % 4) {
      case 1:
        routes.weak[t] = 1 + t % c.E;
        break;
      case 2:
        routes.top_k[t] = 1 + t % c.E;
        break;
      case 3:
        routes.top_p[t] = 0.25f + 0.12f * static_cast<float>(t % 6);
        break;  // to 0.85
      default:
        break;
    }
  }
  if (c.T == 1) routes.top_p[0] = 0.6f;  // the single-token case takes top-p
  std::vector<int32_t> got_counts, want_counts;
  const std::vector<float> got = RunLayer(l, x, c.T, routes, &got_counts);
  const std::vector<double> want = Naive(l, x, routes, &want_counts);
  EXPECT_EQ(got_counts, want_counts);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-4 * (1.0 + std::fabs(want[i]))) << "element " << i;
  }
}

// A plain token's output does not change when other tokens of the step override their
// routing (and the layer leaves room for all E experts per token).
TEST_P(MoeLayerTest, APlainTokenIsBitIdenticalBesideTokensThatOverrideTheirRouting) {
  const MoeCase c = std::get<0>(GetParam());
  if (c.T < 2) GTEST_SKIP() << "needs a second token";
  const Layer l = MakeLayer(c, std::get<1>(GetParam()), 23);
  std::mt19937 rng(9);
  const std::vector<float> x = kernels::cpu::Random(static_cast<size_t>(c.T) * c.H, rng);
  Routes routes;
  routes.top_p.assign(c.T, 0.5f);
  routes.top_p[0] = 0.f;  // token 0 keeps the model's routing
  routes.slots = c.E;
  std::vector<int32_t> counts;
  const std::vector<float> mixed = RunLayer(l, x, c.T, routes, &counts);
  const std::vector<float> first(x.begin(), x.begin() + c.H);
  const std::vector<float> alone = RunLayer(l, first, 1, {}, &counts);
  EXPECT_EQ(std::memcmp(alone.data(), mixed.data(), sizeof(float) * c.H), 0);
}

// A token's output is bit-identical alone and at any position among the others.
TEST_P(MoeLayerTest, RowsAreBitIdenticalAloneAndInTheBatch) {
  const MoeCase c = std::get<0>(GetParam());
  const Layer l = MakeLayer(c, std::get<1>(GetParam()), 99);
  std::mt19937 rng(5);
  const std::vector<float> x = kernels::cpu::Random(static_cast<size_t>(c.T) * c.H, rng);
  std::vector<int32_t> counts;
  const std::vector<float> all = RunLayer(l, x, c.T, {}, &counts);
  for (int t : {0, c.T / 2, c.T - 1}) {
    const std::vector<float> one(x.begin() + static_cast<size_t>(t) * c.H,
                                 x.begin() + static_cast<size_t>(t + 1) * c.H);
    const std::vector<float> alone = RunLayer(l, one, 1, {}, &counts);
    EXPECT_EQ(
        std::memcmp(alone.data(), all.data() + static_cast<size_t>(t) * c.H, sizeof(float) * c.H),
        0)
        << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeLayerTest,
                         testing::Combine(testing::Values(MoeCase{1, 16, 8, 4, 2, true, 0},
                                                          MoeCase{7, 32, 24, 8, 2, true, 0},
                                                          MoeCase{64, 48, 32, 16, 4, false, 0},
                                                          MoeCase{33, 64, 16, 8, 8, true, 0},
                                                          MoeCase{20, 40, 24, 6, 3, false, 40}),
                                          testing::Values(DType::kF32, DType::kBF16),
                                          testing::ValuesIn(kernels::cpu::SupportedIsas())),
                         [](const testing::TestParamInfo<std::tuple<MoeCase, DType, Isa>>& info) {
                           const MoeCase& c = std::get<0>(info.param);
                           return absl::StrCat(
                               "T", c.T, "_H", c.H, "_E", c.E, "K", c.K,
                               c.shared_inter ? "_shared_" : "_",
                               std::get<1>(info.param) == DType::kBF16 ? "bf16_" : "f32_",
                               kernels::cpu::IsaName(std::get<2>(info.param)));
                         });

}  // namespace
}  // namespace moe
