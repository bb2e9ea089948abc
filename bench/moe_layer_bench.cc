// What grouping tokens by expert buys on the CPU (DESIGN.md section 3). Two ways to run
// the same MoE layer, fp32 through OpenBLAS:
//   Grouped:  Gating + Dispatch + ExpertFfn + Combine (kernels/cpu/moe.h): one GEMM per
//             expert over all its rows, so an expert's weights are read once per step.
//   PerToken: Gating, then for each token and each of its K experts the gate/up and down
//             projections as GEMVs (cblas_sgemv) accumulated into the output: every
//             (token, expert) pair reads that expert's weights again.
// Shapes: the default model (models/default/config.json when present, else hidden 256,
// intermediate 256, 8 experts, top-2) and an OLMoE-like layer (hidden 2048, intermediate
// 1024, 64 experts, top-8), at T = 1, 8, 64, 256 tokens. Random router logits, fixed
// seed. Each expert has its own weights so the memory traffic is real (1.6 GB fp32 for
// the OLMoE shape). Before the first timed run of a (shape, T) both paths are compared
// and the program aborts if they disagree. Tokens/s is the items_per_second counter.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/moe.h"
#include "nlohmann/json.hpp"

namespace {

using moe::kernels::CombineParams;
using moe::kernels::DispatchParams;
using moe::kernels::ExpertFfnParams;
using moe::kernels::GatingParams;

struct Shape {
  std::string name;
  int hidden;   // H
  int inter;    // I
  int experts;  // E
  int top_k;    // K
};

// The default model's MoE shape from its config.json, else the documented defaults.
Shape DefaultShape() {
  Shape s{"default", 256, 256, 8, 2};
  std::ifstream in(MOE_DEFAULT_MODEL_CONFIG);
  if (!in) return s;
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return s;
  auto get = [&](std::initializer_list<const char*> keys, int fallback) {
    for (const char* key : keys) {
      if (config.contains(key) && config[key].is_number_integer()) return config[key].get<int>();
    }
    return fallback;
  };
  s.hidden = get({"hidden_size"}, s.hidden);
  s.inter = get({"moe_intermediate_size", "intermediate_size"}, s.inter);
  s.experts = get({"num_experts", "num_local_experts"}, s.experts);
  s.top_k = get({"num_experts_per_tok"}, s.top_k);
  return s;
}

const Shape& GetShape(int index) {
  static const Shape kShapes[] = {DefaultShape(), Shape{"olmoe", 2048, 1024, 64, 8}};
  return kShapes[index];
}

// A 64-bit LCG (Knuth's MMIX constants): 1.6 GB of weights in about a second.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  // Uniform in [-bound, bound).
  float Uniform(float bound) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(state_ >> 40) * (1.f / 16777216.f);  // [0, 1)
    return (2.f * u - 1.f) * bound;
  }
  // Approximately standard normal (sum of 4 uniforms, variance matched).
  float Normal() {
    float sum = 0.f;
    for (int i = 0; i < 4; ++i) sum += Uniform(1.f);
    return sum * std::sqrt(3.f / 4.f);
  }

 private:
  uint64_t state_;
};

// Every expert's own weights: gate_up [2I, H] and down [H, I], Linear-initialised.
struct Weights {
  std::vector<std::vector<float>> gate_up;  // [E][2I * H]
  std::vector<std::vector<float>> down;     // [E][H * I]
  std::vector<const float*> gate_up_ptrs;   // [E]
  std::vector<const float*> down_ptrs;      // [E]
};

const Weights& GetWeights(int shape_index) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Weights>> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Weights>& slot = cache[shape_index];
  if (slot == nullptr) {
    const Shape& s = GetShape(shape_index);
    slot = std::make_unique<Weights>();
    Lcg rng(12345 + shape_index);
    const float gu_bound = 1.f / std::sqrt(static_cast<float>(s.hidden));
    const float dn_bound = 1.f / std::sqrt(static_cast<float>(s.inter));
    for (int e = 0; e < s.experts; ++e) {
      std::vector<float> gu(static_cast<size_t>(2) * s.inter * s.hidden);
      for (float& v : gu) v = rng.Uniform(gu_bound);
      std::vector<float> dn(static_cast<size_t>(s.hidden) * s.inter);
      for (float& v : dn) v = rng.Uniform(dn_bound);
      slot->gate_up.push_back(std::move(gu));
      slot->down.push_back(std::move(dn));
    }
    for (int e = 0; e < s.experts; ++e) {
      slot->gate_up_ptrs.push_back(slot->gate_up[e].data());
      slot->down_ptrs.push_back(slot->down[e].data());
    }
  }
  return *slot;
}

// One step's inputs and every buffer both paths need, allocated outside the timed loop.
struct Layer {
  Layer(const Shape& s, const Weights& w, int tokens)
      : shape(s), weights(w), T(tokens), P(static_cast<size_t>(tokens) * s.top_k) {
    Lcg rng(777 + tokens);
    x.resize(static_cast<size_t>(T) * s.hidden);
    for (float& v : x) v = rng.Uniform(1.f);
    logits.resize(static_cast<size_t>(T) * s.experts);
    for (float& v : logits) v = rng.Normal();
    ids.resize(P);
    topk_w.resize(P);
    offsets.resize(s.experts + 1);
    sorted.resize(P);
    pair_to_row.resize(P);
    ws_x.resize(P * s.hidden);
    ws_gate_up.resize(P * 2 * s.inter);
    ws_act.resize(P * s.inter);
    y.resize(P * s.hidden);
    out.resize(static_cast<size_t>(T) * s.hidden);
    gate_up_vec.resize(2 * s.inter);
    act_vec.resize(s.inter);
  }

  void Route() {
    GatingParams g;
    g.router_logits = logits.data();
    g.num_tokens = T;
    g.num_experts = shape.experts;
    g.top_k = shape.top_k;
    g.renormalize = true;
    g.topk_ids = ids.data();
    g.topk_weights = topk_w.data();
    moe::kernels::Gating(g);
  }

  void RunGrouped() {
    Route();
    DispatchParams d;
    d.topk_ids = ids.data();
    d.num_tokens = T;
    d.top_k = shape.top_k;
    d.num_experts = shape.experts;
    d.expert_offsets = offsets.data();
    d.sorted_pairs = sorted.data();
    d.pair_to_row = pair_to_row.data();
    moe::kernels::Dispatch(d);
    ExpertFfnParams f;
    f.x = x.data();
    f.sorted_pairs = sorted.data();
    f.expert_offsets = offsets.data();
    f.num_tokens = T;
    f.top_k = shape.top_k;
    f.num_experts = shape.experts;
    f.hidden = shape.hidden;
    f.inter = shape.inter;
    f.w_gate_up = weights.gate_up_ptrs.data();
    f.w_down = weights.down_ptrs.data();
    f.ws_x = ws_x.data();
    f.ws_gate_up = ws_gate_up.data();
    f.ws_act = ws_act.data();
    f.y = y.data();
    moe::kernels::ExpertFfn(f);
    CombineParams c;
    c.y = y.data();
    c.pair_to_row = pair_to_row.data();
    c.topk_weights = topk_w.data();
    c.num_tokens = T;
    c.top_k = shape.top_k;
    c.hidden = shape.hidden;
    c.out = out.data();
    moe::kernels::Combine(c);
  }

  // Same math one (token, expert) pair at a time: out[t] += w * down(silu(gate) * up).
  void RunPerToken() {
    Route();
    const int H = shape.hidden;
    const int I = shape.inter;
    const int K = shape.top_k;
    for (int t = 0; t < T; ++t) {
      const float* xt = x.data() + static_cast<size_t>(t) * H;
      float* ot = out.data() + static_cast<size_t>(t) * H;
      std::fill(ot, ot + H, 0.f);
      for (int j = 0; j < K; ++j) {
        const int32_t e = ids[static_cast<size_t>(t) * K + j];
        if (e < 0) continue;
        const float w = topk_w[static_cast<size_t>(t) * K + j];
        // gate_up[2I] = W_gate_up[2I, H] x
        cblas_sgemv(CblasRowMajor, CblasNoTrans, 2 * I, H, 1.f, weights.gate_up_ptrs[e], H, xt, 1,
                    0.f, gate_up_vec.data(), 1);
        for (int i = 0; i < I; ++i) {
          const float g = gate_up_vec[i];
          act_vec[i] = g / (1.f + std::exp(-g)) * gate_up_vec[I + i];
        }
        // out[t] += w * W_down[H, I] act
        cblas_sgemv(CblasRowMajor, CblasNoTrans, H, I, w, weights.down_ptrs[e], I, act_vec.data(),
                    1, 1.f, ot, 1);
      }
    }
  }

  const Shape& shape;
  const Weights& weights;
  const int T;
  const size_t P;
  std::vector<float> x, logits, topk_w, ws_x, ws_gate_up, ws_act, y, out, gate_up_vec, act_vec;
  std::vector<int32_t> ids, offsets, sorted, pair_to_row;
};

// Both paths once; abort if they disagree beyond fp32 summation-order noise.
void VerifyOnce(int shape_index, int tokens) {
  static std::mutex mu;
  static std::set<std::pair<int, int>> done;
  std::lock_guard<std::mutex> lock(mu);
  if (!done.insert({shape_index, tokens}).second) return;
  const Shape& s = GetShape(shape_index);
  Layer layer(s, GetWeights(shape_index), tokens);
  layer.RunGrouped();
  const std::vector<float> grouped = layer.out;
  std::fill(layer.out.begin(), layer.out.end(), std::nanf(""));
  layer.RunPerToken();
  double sq = 0;
  for (float v : grouped) sq += static_cast<double>(v) * v;
  const double rms = std::sqrt(sq / grouped.size());
  for (size_t i = 0; i < grouped.size(); ++i) {
    const double tol = 1e-4 * std::max<double>(std::fabs(grouped[i]), rms);
    if (!(std::fabs(grouped[i] - layer.out[i]) <= tol)) {
      std::fprintf(stderr,
                   "moe_layer_bench: grouped and per-token outputs disagree (shape %s, T=%d, "
                   "out[%zu]: grouped %g, per-token %g, tol %g)\n",
                   s.name.c_str(), tokens, i, grouped[i], layer.out[i], tol);
      std::abort();
    }
  }
}

template <bool kGrouped>
void BM_MoeLayer(benchmark::State& state, int shape_index) {
  const int tokens = static_cast<int>(state.range(0));
  VerifyOnce(shape_index, tokens);
  const Shape& s = GetShape(shape_index);
  Layer layer(s, GetWeights(shape_index), tokens);
  for (auto _ : state) {
    if constexpr (kGrouped) {
      layer.RunGrouped();
    } else {
      layer.RunPerToken();
    }
    benchmark::DoNotOptimize(layer.out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * tokens);
  state.SetLabel(s.name + " H=" + std::to_string(s.hidden) + " I=" + std::to_string(s.inter) +
                 " E=" + std::to_string(s.experts) + " K=" + std::to_string(s.top_k));
}

void Grouped(benchmark::State& state, int shape_index) { BM_MoeLayer<true>(state, shape_index); }
void PerToken(benchmark::State& state, int shape_index) { BM_MoeLayer<false>(state, shape_index); }

// Wall time: OpenBLAS runs its own threads.
#define MOE_LAYER_BENCH(fn, name, index) \
  BENCHMARK_CAPTURE(fn, name, index)     \
      ->ArgName("T")                     \
      ->Arg(1)                           \
      ->Arg(8)                           \
      ->Arg(64)                          \
      ->Arg(256)                         \
      ->UseRealTime()                    \
      ->Unit(benchmark::kMillisecond)

MOE_LAYER_BENCH(Grouped, default, 0);
MOE_LAYER_BENCH(PerToken, default, 0);
MOE_LAYER_BENCH(Grouped, olmoe, 1);
MOE_LAYER_BENCH(PerToken, olmoe, 1);

}  // namespace
