// What grouping tokens by expert buys on the CPU (DESIGN.md section 3). Two ways to run
// the same MoE layer on the CPU backend, with bf16 or fp32 expert weights:
//   Grouped:  RunMoeLayer (engine/moe_layer.h): router GEMM, gating, dispatch, one GEMM
//             per expert over all its rows (all experts in one parallel region), combine:
//             an expert's weights are read once per step.
//   PerToken: the router GEMM and gating, then for each token and each of its K experts
//             the gate/up and down projections as one-row Linears accumulated into the
//             output: every (token, expert) pair reads that expert's weights again.
// Shapes: the default model (models/default/config.json when present, else hidden 256,
// intermediate 256, 8 experts, top-2) and an OLMoE-like layer (hidden 2048, intermediate
// 1024, 64 experts, top-8), at T = 1, 8, 64, 256 tokens. Random weights, fixed seed; each
// expert has its own, so the memory traffic is real (805 MB of bf16 experts for the OLMoE
// shape). Before the first timed run of a (shape, dtype, T) both paths are compared and
// the program aborts if they disagree. Tokens/s is items_per_second; bytes_per_second
// counts the expert weights each path reads.
#include <benchmark/benchmark.h>

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
#include <tuple>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/expert_source.h"
#include "engine/moe_layer.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/ops.h"
#include "nlohmann/json.hpp"

namespace {

namespace cpu = moe::kernels::cpu;
using moe::kernels::DType;
using moe::kernels::MatrixRef;
using moe::kernels::WeightLayout;

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

// A 64-bit LCG (Knuth's MMIX constants): a gigabyte of weights in about a second.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  float Uniform(float bound) {  // in [-bound, bound)
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(state_ >> 40) * (1.f / 16777216.f);
    return (2.f * u - 1.f) * bound;
  }

 private:
  uint64_t state_;
};

// A random Linear-initialised [rows, cols] matrix, packed for the CPU GEMM.
struct Packed {
  std::vector<char> bytes;
  MatrixRef ref;
};

Packed RandomPacked(Lcg& rng, int64_t rows, int64_t cols, DType dtype) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  const float bound = 1.f / std::sqrt(static_cast<float>(cols));
  for (float& v : w) v = rng.Uniform(bound);
  Packed p;
  p.bytes.resize(moe::kernels::MatrixBytes(dtype, WeightLayout::kPanels16, rows, cols));
  const cpu::PackSource src{w.data(), cpu::SourceType::kF32, rows};
  cpu::PackPanels(std::span(&src, 1), cols, dtype, p.bytes.data());
  p.ref = {p.bytes.data(), dtype, WeightLayout::kPanels16, rows, cols};
  return p;
}

// The router and every expert's own weights.
struct Weights {
  Packed router;                      // [E, H]
  std::vector<Packed> gate_up, down;  // [E]: [2I, H], [H, I]
  std::unique_ptr<moe::ResidentExperts> source;
  int64_t expert_bytes = 0;  // one expert's
};

const Weights& GetWeights(int shape_index, DType dtype) {
  static std::mutex mu;
  static std::map<std::pair<int, DType>, std::unique_ptr<Weights>> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Weights>& slot = cache[{shape_index, dtype}];
  if (slot == nullptr) {
    const Shape& s = GetShape(shape_index);
    slot = std::make_unique<Weights>();
    Lcg rng(12345 + shape_index);
    slot->router = RandomPacked(rng, s.experts, s.hidden, dtype);
    std::vector<std::vector<MatrixRef>> gu(1), dn(1);
    for (int e = 0; e < s.experts; ++e) {
      slot->gate_up.push_back(RandomPacked(rng, 2 * s.inter, s.hidden, dtype));
      slot->down.push_back(RandomPacked(rng, s.hidden, s.inter, dtype));
      gu[0].push_back(slot->gate_up.back().ref);
      dn[0].push_back(slot->down.back().ref);
    }
    slot->source = std::make_unique<moe::ResidentExperts>(gu, dn);
    slot->expert_bytes =
        static_cast<int64_t>(slot->gate_up[0].bytes.size() + slot->down[0].bytes.size());
  }
  return *slot;
}

// One step's inputs and every buffer both paths need, allocated outside the timed loop.
struct Layer {
  Layer(const Shape& s, const Weights& w, int tokens)
      : shape(s), weights(w), T(tokens), ws(&backend) {
    Lcg rng(777 + tokens);
    x.resize(static_cast<size_t>(T) * s.hidden);
    for (float& v : x) v = rng.Uniform(1.f);
    out.resize(x.size());
    spec.hidden = s.hidden;
    spec.inter = s.inter;
    spec.num_experts = s.experts;
    spec.top_k = s.top_k;
    spec.renormalize = true;
    spec.router = w.router.ref;
    expert_tokens.resize(s.experts);
    const size_t P = static_cast<size_t>(T) * s.top_k;
    logits.resize(static_cast<size_t>(T) * s.experts);
    ids.resize(P);
    topk_w.resize(P);
    gate_up_vec.resize(2 * s.inter);
    act_vec.resize(s.inter);
    y_vec.resize(s.hidden);
  }

  // Expert weight bytes the grouped path read in its last run.
  int64_t GroupedBytes() const {
    int64_t n = 0;
    for (int32_t c : expert_tokens) n += c > 0;
    return n * weights.expert_bytes;
  }

  void RunGrouped() {
    const absl::Status s = moe::RunMoeLayer(backend, spec, *weights.source, 0, x.data(), T, nullptr,
                                            ws, out.data(), expert_tokens.data());
    if (!s.ok()) {
      std::fprintf(stderr, "moe_layer_bench: %s\n", std::string(s.message()).c_str());
      std::abort();
    }
  }

  // Same math one (token, expert) pair at a time: out[t] += w * down(silu(gate) * up).
  void RunPerToken() {
    const int H = shape.hidden, I = shape.inter, K = shape.top_k, E = shape.experts;
    moe::kernels::LinearParams r;
    r.x = x.data();
    r.ldx = H;
    r.m = T;
    r.w = weights.router.ref;
    r.y = logits.data();
    r.ldy = E;
    cpu::Linear(r);
    moe::kernels::GatingParams g;
    g.router_logits = logits.data();
    g.num_tokens = T;
    g.num_experts = E;
    g.top_k = K;
    g.renormalize = true;
    g.topk_ids = ids.data();
    g.topk_weights = topk_w.data();
    cpu::Gating(g);
    for (int t = 0; t < T; ++t) {
      float* ot = out.data() + static_cast<size_t>(t) * H;
      std::fill(ot, ot + H, 0.f);
      for (int j = 0; j < K; ++j) {
        const int32_t e = ids[static_cast<size_t>(t) * K + j];
        moe::kernels::LinearParams p;
        p.x = x.data() + static_cast<size_t>(t) * H;
        p.ldx = H;
        p.m = 1;
        p.w = weights.gate_up[e].ref;
        p.y = gate_up_vec.data();
        p.ldy = 2 * I;
        cpu::Linear(p);
        cpu::SiluMul({gate_up_vec.data(), 1, I, act_vec.data()});
        p.x = act_vec.data();
        p.ldx = I;
        p.w = weights.down[e].ref;
        p.y = y_vec.data();
        p.ldy = H;
        cpu::Linear(p);
        const float w = topk_w[static_cast<size_t>(t) * K + j];
        for (int h = 0; h < H; ++h) ot[h] += w * y_vec[h];
      }
    }
  }

  const Shape& shape;
  const Weights& weights;
  const int T;
  moe::CpuBackend backend;
  moe::Workspace ws;
  moe::MoeLayerSpec spec;
  std::vector<float> x, out, logits, topk_w, gate_up_vec, act_vec, y_vec;
  std::vector<int32_t> ids, expert_tokens;
};

// Both paths once; abort if they disagree beyond fp32 summation-order noise.
void VerifyOnce(int shape_index, DType dtype, int tokens) {
  static std::mutex mu;
  static std::set<std::tuple<int, DType, int>> done;
  std::lock_guard<std::mutex> lock(mu);
  if (!done.insert({shape_index, dtype, tokens}).second) return;
  const Shape& s = GetShape(shape_index);
  Layer layer(s, GetWeights(shape_index, dtype), tokens);
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
void BM_MoeLayer(benchmark::State& state, int shape_index, DType dtype) {
  const int tokens = static_cast<int>(state.range(0));
  VerifyOnce(shape_index, dtype, tokens);
  const Shape& s = GetShape(shape_index);
  const Weights& w = GetWeights(shape_index, dtype);
  Layer layer(s, w, tokens);
  int64_t bytes = 0;
  for (auto _ : state) {
    if constexpr (kGrouped) {
      layer.RunGrouped();
      bytes += layer.GroupedBytes();
    } else {
      layer.RunPerToken();
      bytes += static_cast<int64_t>(tokens) * s.top_k * w.expert_bytes;
    }
    benchmark::DoNotOptimize(layer.out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * tokens);
  state.SetBytesProcessed(bytes);
  state.SetLabel(s.name + " " + moe::kernels::DTypeName(dtype) + " H=" + std::to_string(s.hidden) +
                 " I=" + std::to_string(s.inter) + " E=" + std::to_string(s.experts) +
                 " K=" + std::to_string(s.top_k));
}

void Grouped(benchmark::State& state, int shape_index, DType dtype) {
  BM_MoeLayer<true>(state, shape_index, dtype);
}
void PerToken(benchmark::State& state, int shape_index, DType dtype) {
  BM_MoeLayer<false>(state, shape_index, dtype);
}

// Wall time: the kernels run on every core.
#define MOE_LAYER_BENCH(fn, name, index, dtype) \
  BENCHMARK_CAPTURE(fn, name, index, dtype)     \
      ->ArgName("T")                            \
      ->Arg(1)                                  \
      ->Arg(8)                                  \
      ->Arg(64)                                 \
      ->Arg(256)                                \
      ->UseRealTime()                           \
      ->Unit(benchmark::kMillisecond)

MOE_LAYER_BENCH(Grouped, default_bf16, 0, DType::kBF16);
MOE_LAYER_BENCH(PerToken, default_bf16, 0, DType::kBF16);
MOE_LAYER_BENCH(Grouped, olmoe_bf16, 1, DType::kBF16);
MOE_LAYER_BENCH(PerToken, olmoe_bf16, 1, DType::kBF16);
MOE_LAYER_BENCH(Grouped, olmoe_f32, 1, DType::kF32);
MOE_LAYER_BENCH(PerToken, olmoe_f32, 1, DType::kF32);

}  // namespace
