// Backend ops on CUDA against the CPU backend, table-driven in the style of ggml's
// test-backend-ops: each case builds fresh random inputs, runs the op through both
// backends (the same code: inputs copied into the backend's compute memory, the output
// poisoned first and read back), and compares within a tolerance per op. Skips without a
// CUDA device. Every op of engine/backend.h has a case: weights are packed in each
// backend's own layout (panels on the CPU, row-major on CUDA) from the same values, and
// routing ids must match exactly.
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"

namespace moe {
namespace {

using kernels::DType;
using kernels::WeightLayout;

constexpr float kPoison = 1.2345e30f;

// Inputs and outputs of one op in one backend's compute memory.
class Arena {
 public:
  explicit Arena(Backend& backend) : backend_(backend) {}

  template <typename T>
  T* Up(const std::vector<T>& host) {
    const size_t bytes = std::max<size_t>(host.size() * sizeof(T), 1);
    absl::StatusOr<Buffer> buf = backend_.Allocate(backend_.compute_memory(), bytes);
    EXPECT_TRUE(buf.ok()) << buf.status();
    if (!host.empty()) {
      EXPECT_TRUE(backend_.CopyToBackend(buf->data(), host.data(), bytes).ok());
    }
    keep_.push_back(*std::move(buf));
    return static_cast<T*>(keep_.back().data());
  }
  std::vector<float> Down(const float* p, size_t n) {
    std::vector<float> out(n);
    EXPECT_TRUE(backend_.Synchronize().ok());
    EXPECT_TRUE(backend_.CopyToHost(out.data(), p, n * sizeof(float)).ok());
    return out;
  }
  // Ids, as floats for the comparison (any difference is at least 1).
  std::vector<float> Down(const int32_t* p, size_t n) {
    std::vector<int32_t> ids(n);
    EXPECT_TRUE(backend_.Synchronize().ok());
    EXPECT_TRUE(backend_.CopyToHost(ids.data(), p, n * sizeof(int32_t)).ok());
    return std::vector<float>(ids.begin(), ids.end());
  }
  Backend& backend() { return backend_; }

 private:
  Backend& backend_;
  std::vector<Buffer> keep_;
};

struct OpCase {
  std::string name;
  float tolerance;  // max |got - want| / (1 + |want|)
  // Runs the op through the arena's backend with inputs drawn from `seed`; the output.
  std::function<std::vector<float>(Arena&, uint32_t seed)> run;
};

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = nd(rng);
  return v;
}

// A [rows, cols] weight of fp32 values in the arena's backend, in its layout and `dtype`.
kernels::MatrixRef UpWeight(Arena& a, const std::vector<float>& w, int64_t rows, int64_t cols,
                            DType dtype) {
  const WeightLayout layout = a.backend().weight_layout();
  std::vector<uint8_t> bytes(kernels::MatrixBytes(dtype, layout, rows, cols));
  if (layout == WeightLayout::kPanels16) {
    const kernels::cpu::PackSource src{w.data(), kernels::cpu::SourceType::kF32, rows};
    kernels::cpu::PackPanels(std::span(&src, 1), cols, dtype, bytes.data());
  } else {
    kernels::cpu::ConvertRows(w.data(), kernels::cpu::SourceType::kF32, rows * cols, dtype,
                              bytes.data());
  }
  return {a.Up(bytes), dtype, layout, rows, cols};
}

// Tolerance of a GEMM's output: CUDA's bf16 GEMMs round their input rows to bf16 (the
// CPU's widen the weights and keep fp32 inputs), so bf16 allows that rounding.
float GemmTolerance(DType dtype) { return dtype == DType::kBF16 ? 2e-2f : 2e-5f; }

std::vector<OpCase> Cases() {
  std::vector<OpCase> cases;
  // Linear with a bias, strided input and output rows; LinearBatch of two problems.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    cases.push_back({std::string("linear_") + kernels::DTypeName(dtype), GemmTolerance(dtype),
                     [dtype](Arena& a, uint32_t seed) {
                       const int M = 21, N = 150, K = 300, ldx = 310, ldy = 160;
                       kernels::LinearParams p;
                       p.x = a.Up(Random(size_t{M} * ldx, seed));
                       p.ldx = ldx;
                       p.m = M;
                       p.w = UpWeight(a, Random(size_t{N} * K, seed + 1, 0.05f), N, K, dtype);
                       p.bias = a.Up(Random(N, seed + 2));
                       p.y = a.Up(std::vector<float>(size_t{M} * ldy, kPoison));
                       p.ldy = ldy;
                       EXPECT_TRUE(a.backend().Linear(p).ok());
                       std::vector<float> all = a.Down(p.y, size_t{M} * ldy), out;
                       for (int m = 0; m < M; ++m) {  // the columns past N stay unwritten
                         out.insert(out.end(), all.begin() + static_cast<size_t>(m) * ldy,
                                    all.begin() + static_cast<size_t>(m) * ldy + N);
                       }
                       return out;
                     }});
    cases.push_back({std::string("linear_batch_") + kernels::DTypeName(dtype), GemmTolerance(dtype),
                     [dtype](Arena& a, uint32_t seed) {
                       const int M = 5, K = 128;
                       const int n[2] = {64, 33};
                       const float* x = a.Up(Random(size_t{M} * K, seed));
                       kernels::LinearParams p[2];
                       for (int i = 0; i < 2; ++i) {
                         p[i].x = x;
                         p[i].ldx = K;
                         p[i].m = M;
                         p[i].w = UpWeight(a, Random(size_t(n[i]) * K, seed + 1 + i, 0.05f), n[i],
                                           K, dtype);
                         p[i].y = a.Up(std::vector<float>(size_t{M} * n[i], kPoison));
                         p[i].ldy = n[i];
                       }
                       EXPECT_TRUE(a.backend().LinearBatch(p).ok());
                       std::vector<float> out = a.Down(p[0].y, size_t{M} * n[0]);
                       const std::vector<float> second = a.Down(p[1].y, size_t{M} * n[1]);
                       out.insert(out.end(), second.begin(), second.end());
                       return out;
                     }});
  }
  // The MoE layer's four ops in sequence: gating (with per-token overrides on some
  // tokens), dispatch, the expert FFN, combine. The output is the routing ids and weights
  // (ids exact: any difference is at least 1), the dispatch plan, and the combined rows.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    cases.push_back(
        {std::string("moe_ops_") + kernels::DTypeName(dtype), GemmTolerance(dtype),
         [dtype](Arena& a, uint32_t seed) {
           const int T = 13, E = 8, K = 2, H = 96, I = 64, slots = E;  // top-p may use all E
           std::vector<int32_t> weak(T, 0), topk(T, 0);
           std::vector<float> topp(T, 0.f);
           weak[3] = 2;
           topk[5] = 4;
           topp[8] = 0.5f;
           kernels::GatingParams gp;
           gp.router_logits = a.Up(Random(size_t{T} * E, seed, 2.f));
           gp.num_tokens = T;
           gp.num_experts = E;
           gp.top_k = K;
           gp.renormalize = true;
           gp.weak_rank = a.Up(weak);
           gp.route_top_k = a.Up(topk);
           gp.route_top_p = a.Up(topp);
           gp.slots = slots;
           const size_t P = size_t{T} * slots;
           gp.topk_ids = a.Up(std::vector<int32_t>(P, -9));
           gp.topk_weights = a.Up(std::vector<float>(P, kPoison));
           EXPECT_TRUE(a.backend().Gating(gp).ok());
           kernels::DispatchParams dp;
           dp.topk_ids = gp.topk_ids;
           dp.num_tokens = T;
           dp.top_k = slots;
           dp.num_experts = E;
           dp.expert_offsets = a.Up(std::vector<int32_t>(E + 1, -9));
           dp.sorted_pairs = a.Up(std::vector<int32_t>(P, -9));
           dp.pair_to_row = a.Up(std::vector<int32_t>(P, -9));
           EXPECT_TRUE(a.backend().Dispatch(dp).ok());
           std::vector<kernels::MatrixRef> gate_up(E), down(E);
           for (int e = 0; e < E; ++e) {
             gate_up[e] =
                 UpWeight(a, Random(size_t{2} * I * H, seed + 10 + e, 0.1f), 2 * I, H, dtype);
             down[e] = UpWeight(a, Random(size_t{H} * I, seed + 30 + e, 0.1f), H, I, dtype);
           }
           kernels::ExpertFfnParams ep;
           ep.x = a.Up(Random(size_t{T} * H, seed + 1));
           ep.sorted_pairs = dp.sorted_pairs;
           ep.expert_offsets = dp.expert_offsets;
           ep.num_tokens = T;
           ep.top_k = slots;
           ep.num_experts = E;
           ep.hidden = H;
           ep.inter = I;
           ep.w_gate_up = gate_up.data();
           ep.w_down = down.data();
           ep.ws_x = a.Up(std::vector<float>(P * H, kPoison));
           ep.ws_gate_up = a.Up(std::vector<float>(P * 2 * I, kPoison));
           ep.ws_act = a.Up(std::vector<float>(P * I, kPoison));
           ep.y = a.Up(std::vector<float>(P * H, kPoison));
           EXPECT_TRUE(a.backend().ExpertFfn(ep).ok());
           kernels::CombineParams cp;
           cp.y = ep.y;
           cp.pair_to_row = dp.pair_to_row;
           cp.topk_weights = gp.topk_weights;
           cp.num_tokens = T;
           cp.top_k = slots;
           cp.hidden = H;
           cp.out = a.Up(std::vector<float>(size_t{T} * H, kPoison));
           EXPECT_TRUE(a.backend().Combine(cp).ok());
           std::vector<float> out = a.Down(gp.topk_ids, P);
           for (const std::vector<float>& part :
                {a.Down(gp.topk_weights, P), a.Down(dp.expert_offsets, E + 1),
                 a.Down(dp.pair_to_row, P), a.Down(cp.out, size_t{T} * H)}) {
             out.insert(out.end(), part.begin(), part.end());
           }
           return out;
         }});
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    cases.push_back({std::string("embedding_") + kernels::DTypeName(dtype), 0.f,
                     [dtype](Arena& a, uint32_t seed) {
                       const int V = 301, H = 200, T = 37;
                       const std::vector<float> table = Random(size_t{V} * H, seed);
                       std::vector<int32_t> ids(T);
                       std::mt19937 rng(seed + 1);
                       for (int32_t& id : ids) id = static_cast<int32_t>(rng() % V);
                       kernels::EmbeddingParams p;
                       if (dtype == DType::kBF16) {
                         std::vector<uint16_t> bits(table.size());
                         for (size_t i = 0; i < table.size(); ++i) {
                           uint32_t u;
                           std::memcpy(&u, &table[i], 4);
                           bits[i] = static_cast<uint16_t>(u >> 16);
                         }
                         p.table = {a.Up(bits), dtype, WeightLayout::kRowMajor, V, H};
                       } else {
                         p.table = {a.Up(table), dtype, WeightLayout::kRowMajor, V, H};
                       }
                       p.ids = a.Up(ids);
                       p.num_tokens = T;
                       p.out = a.Up(std::vector<float>(size_t{T} * H, kPoison));
                       EXPECT_TRUE(a.backend().Embedding(p).ok());
                       return a.Down(p.out, size_t{T} * H);
                     }});
  }
  for (bool indirect : {false, true}) {
    cases.push_back(
        {indirect ? "rms_norm_rows" : "rms_norm", 2e-6f, [indirect](Arena& a, uint32_t seed) {
           const int rows = 19, n = 1000;
           kernels::RmsNormParams p;
           p.x = a.Up(Random(size_t{rows + 3} * n, seed, 3.f));
           p.weight = a.Up(Random(n, seed + 1));
           p.rows = rows;
           p.n = n;
           p.eps = 1e-5f;
           std::vector<int32_t> order(rows);
           for (int r = 0; r < rows; ++r) order[r] = (r * 7 + 2) % (rows + 3);
           if (indirect) p.x_rows = a.Up(order);
           p.y = a.Up(std::vector<float>(size_t{rows} * n, kPoison));
           EXPECT_TRUE(a.backend().RmsNorm(p).ok());
           return a.Down(p.y, size_t{rows} * n);
         }});
  }
  for (int rotary : {64, 32}) {
    cases.push_back(
        {"rope_rotary" + std::to_string(rotary), 1e-5f, [rotary](Arena& a, uint32_t seed) {
           const int T = 9, heads = 6, D = 64;
           std::vector<int32_t> positions(T);
           std::mt19937 rng(seed);
           for (int32_t& pos : positions) pos = static_cast<int32_t>(rng() % 4000);
           kernels::RopeParams p;
           p.x = a.Up(Random(size_t{T} * heads * D, seed + 1));
           p.positions = a.Up(positions);
           p.num_tokens = T;
           p.num_heads = heads;
           p.head_dim = D;
           p.rotary_dim = rotary;
           p.theta = 1e6f;
           EXPECT_TRUE(a.backend().Rope(p).ok());
           return a.Down(p.x, size_t{T} * heads * D);
         }});
  }
  // Two sequences writing scattered positions into a cache of 6 blocks; every slot not
  // written keeps its fill value.
  cases.push_back({"kv_write", 0.f, [](Arena& a, uint32_t seed) {
                     const int T = 12, Hkv = 4, D = 32, B = 16, blocks = 6;
                     const int kv_dim = Hkv * D;
                     const std::vector<int32_t> table0 = {4, 1, 3}, table1 = {0, 5, 2};
                     std::vector<int32_t> seq(T), positions(T);
                     for (int t = 0; t < T; ++t) {
                       seq[t] = t % 2;
                       positions[t] = (t * 13 + static_cast<int>(seed)) % (3 * B);
                     }
                     const std::vector<const int32_t*> tables = {a.Up(table0), a.Up(table1)};
                     kernels::KvWriteParams p;
                     p.k = a.Up(Random(size_t{T} * kv_dim, seed));
                     p.v = a.Up(Random(size_t{T} * kv_dim, seed + 1));
                     p.num_tokens = T;
                     p.kv_dim = kv_dim;
                     p.token_seq = a.Up(seq);
                     p.positions = a.Up(positions);
                     p.block_tables = a.Up(tables);
                     p.block_size = B;
                     p.num_kv_heads = Hkv;
                     const size_t cache = size_t{blocks} * kv_dim * B;
                     p.k_cache = a.Up(std::vector<float>(cache, -7.f));
                     p.v_cache = a.Up(std::vector<float>(cache, -7.f));
                     EXPECT_TRUE(a.backend().KvWrite(p).ok());
                     std::vector<float> out = a.Down(p.k_cache, cache);
                     const std::vector<float> v = a.Down(p.v_cache, cache);
                     out.insert(out.end(), v.begin(), v.end());
                     return out;
                   }});
  // Two sequences, a prefill chunk and decodes, at positions up to 300 (tiles of 128 keys
  // and a partial last one); GQA with 4 q heads per kv head; with and without a window.
  for (int window : {0, 100}) {
    cases.push_back({"paged_attention_window" + std::to_string(window), 2e-5f,
                     [window](Arena& a, uint32_t seed) {
                       const int Hq = 8, Hkv = 2, D = 64, B = 16, per_seq = 20;
                       const int blocks = 2 * per_seq;
                       std::vector<int32_t> table0(per_seq), table1(per_seq);
                       for (int b = 0; b < per_seq; ++b) {
                         table0[b] = 2 * b + 1;  // interleaved, out of order
                         table1[b] = blocks - 2 - 2 * b;
                       }
                       std::vector<int32_t> seq, positions;
                       for (int i = 0; i < 6; ++i) {  // sequence 0: a chunk at 200..205
                         seq.push_back(0);
                         positions.push_back(200 + i);
                       }
                       for (int pos : {0, 1, 127, 128, 299}) {  // sequence 1: scattered
                         seq.push_back(1);
                         positions.push_back(pos);
                       }
                       const int T = static_cast<int>(seq.size());
                       const std::vector<const int32_t*> tables = {a.Up(table0), a.Up(table1)};
                       const size_t cache = size_t{blocks} * Hkv * D * B;
                       kernels::PagedAttentionParams p;
                       p.q = a.Up(Random(static_cast<size_t>(T) * Hq * D, seed));
                       p.out = a.Up(std::vector<float>(static_cast<size_t>(T) * Hq * D, kPoison));
                       p.num_tokens = T;
                       p.num_q_heads = Hq;
                       p.num_kv_heads = Hkv;
                       p.head_dim = D;
                       p.token_seq = a.Up(seq);
                       p.positions = a.Up(positions);
                       p.block_tables = a.Up(tables);
                       p.block_size = B;
                       p.k_cache = a.Up(Random(cache, seed + 1));
                       p.v_cache = a.Up(Random(cache, seed + 2));
                       p.scale = 0.125f;
                       p.sliding_window = window;
                       EXPECT_TRUE(a.backend().PagedAttention(p).ok());
                       return a.Down(p.out, static_cast<size_t>(T) * Hq * D);
                     }});
  }
  // Rows of a vocabulary's width with ties for the maximum (the lowest index wins) and a
  // row whose maximum is the last entry.
  cases.push_back({"argmax", 0.f, [](Arena& a, uint32_t seed) {
                     const int rows = 9;
                     const int64_t n = 50000;
                     std::vector<float> x = Random(static_cast<size_t>(rows) * n, seed, 3.f);
                     for (int r = 0; r < rows; ++r) {
                       float* row = x.data() + r * n;
                       if (r % 3 == 0) row[(r * 7919) % n] = row[(r * 104729) % n] = 100.f;
                       if (r == 4) row[n - 1] = 200.f;
                     }
                     kernels::ArgMaxParams p;
                     p.x = a.Up(x);
                     p.rows = rows;
                     p.n = n;
                     p.ids = a.Up(std::vector<int32_t>(rows, -9));
                     EXPECT_TRUE(a.backend().ArgMax(p).ok());
                     return a.Down(p.ids, rows);
                   }});
  // Rows drawn on the backend: greedy, plain, top-k, top-p, both; ids exact (the two
  // kernels sum the weights in double in different orders, which moves a draw only when
  // u lands within rounding of a boundary).
  cases.push_back({"sample", 0.f, [](Arena& a, uint32_t seed) {
                     const int rows = 8;
                     const int64_t n = 32000;
                     const std::vector<float> x = Random(static_cast<size_t>(rows) * n, seed, 4.f);
                     const std::vector<float> t = {0.f, 1.f, 0.7f, 1.3f, 1.f, 0.5f, 2.f, 1.f};
                     const std::vector<int32_t> k = {0, 0, 50, 0, 1, 40, 0, 7};
                     const std::vector<float> p = {1.f, 1.f, 1.f, 0.9f, 1.f, 0.8f, 0.3f, 0.95f};
                     std::vector<float> u(rows);
                     std::mt19937 rng(seed);
                     for (float& v : u) v = std::uniform_real_distribution<float>(0.f, 1.f)(rng);
                     kernels::SampleParams sp;
                     sp.x = a.Up(x);
                     sp.rows = rows;
                     sp.n = n;
                     sp.temperature = a.Up(t);
                     sp.top_k = a.Up(k);
                     sp.top_p = a.Up(p);
                     sp.uniform = a.Up(u);
                     sp.ids = a.Up(std::vector<int32_t>(rows, -9));
                     EXPECT_TRUE(a.backend().Sample(sp).ok());
                     return a.Down(sp.ids, rows);
                   }});
  // SCMoE rows combined in place: three pairs (rows out of order), one with EOS banned,
  // one whose plausible tokens are all EOS (the fallback). The strong rows' scores and
  // the untouched weak rows come back.
  cases.push_back(
      {"self_contrast_rows", 1e-6f, [](Arena& a, uint32_t seed) {
         const int rows = 6;
         const int64_t n = 5000;
         std::vector<float> x = Random(static_cast<size_t>(rows) * n, seed, 3.f);
         x[4 * n + 17] = 50.f;  // pair 2's strong row: one dominant token, an EOS
         const std::vector<int32_t> strong = {1, 4, 5}, weak = {0, 3, 2};
         const std::vector<float> inv_t = {1.f, 1.f / 0.7f, 1.f};
         const std::vector<float> log_alpha = {std::log(0.1f), std::log(0.5f), std::log(0.9f)};
         const std::vector<float> beta = {0.5f, 1.f, 0.f};
         const std::vector<int32_t> ban = {0, 1, 1}, eos = {17, 3};
         kernels::SelfContrastRowsParams p;
         p.x = a.Up(x);
         p.n = n;
         p.pairs = 3;
         p.strong_row = a.Up(strong);
         p.weak_row = a.Up(weak);
         p.inv_temperature = a.Up(inv_t);
         p.log_alpha = a.Up(log_alpha);
         p.beta = a.Up(beta);
         p.ban_eos = a.Up(ban);
         p.eos_ids = a.Up(eos);
         p.num_eos = 2;
         EXPECT_TRUE(a.backend().SelfContrastRows(p).ok());
         std::vector<float> out = a.Down(p.x, static_cast<size_t>(rows) * n);
         for (float& v : out) {  // -inf compares as a number for the harness
           if (std::isinf(v)) v = v < 0 ? -1e30f : 1e30f;
         }
         return out;
       }});
  cases.push_back({"silu_mul", 1e-6f, [](Arena& a, uint32_t seed) {
                     const int rows = 13, inter = 700;
                     kernels::SiluMulParams p;
                     p.gate_up = a.Up(Random(size_t{rows} * 2 * inter, seed, 4.f));
                     p.rows = rows;
                     p.inter = inter;
                     p.out = a.Up(std::vector<float>(size_t{rows} * inter, kPoison));
                     EXPECT_TRUE(a.backend().SiluMul(p).ok());
                     return a.Down(p.out, size_t{rows} * inter);
                   }});
  cases.push_back({"add", 0.f, [](Arena& a, uint32_t seed) {
                     const int64_t n = 100003;
                     kernels::AddParams p;
                     p.x = a.Up(Random(n, seed));
                     p.y = a.Up(Random(n, seed + 1));
                     p.n = n;
                     EXPECT_TRUE(a.backend().Add(p).ok());
                     return a.Down(p.x, n);
                   }});
  cases.push_back({"clamp", 0.f, [](Arena& a, uint32_t seed) {
                     const int64_t n = 5000;
                     kernels::ClampParams p;
                     p.x = a.Up(Random(n, seed, 10.f));
                     p.n = n;
                     p.limit = 8.f;
                     EXPECT_TRUE(a.backend().Clamp(p).ok());
                     return a.Down(p.x, n);
                   }});
  cases.push_back({"sigmoid_gated_add", 1e-6f, [](Arena& a, uint32_t seed) {
                     const int rows = 11, n = 640;
                     kernels::SigmoidGatedAddParams p;
                     p.x = a.Up(Random(size_t{rows} * n, seed));
                     p.y = a.Up(Random(size_t{rows} * n, seed + 1));
                     p.gate = a.Up(Random(rows, seed + 2, 3.f));
                     p.rows = rows;
                     p.n = n;
                     EXPECT_TRUE(a.backend().SigmoidGatedAdd(p).ok());
                     return a.Down(p.x, size_t{rows} * n);
                   }});
  return cases;
}

class BackendOpsTest : public testing::TestWithParam<OpCase> {};

TEST_P(BackendOpsTest, CudaMatchesTheCpuBackend) {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
  if (!cuda.ok()) GTEST_SKIP() << cuda.status();
  CpuBackend cpu;
  const OpCase& c = GetParam();
  for (uint32_t seed : {1u, 2u, 3u}) {
    Arena on_cpu(cpu), on_gpu(**cuda);
    const std::vector<float> want = c.run(on_cpu, seed);
    const std::vector<float> got = c.run(on_gpu, seed);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), c.tolerance * (1.f + std::fabs(want[i])))
          << c.name << " seed " << seed << " element " << i << ": gpu " << got[i] << " cpu "
          << want[i];
    }
  }
}

// The harness itself, wherever the tests run: on the CPU backend every case writes its
// whole output (no poison left), finite, the same twice.
TEST_P(BackendOpsTest, TheCaseRunsOnTheCpuBackend) {
  CpuBackend cpu;
  const OpCase& c = GetParam();
  Arena first(cpu), second(cpu);
  const std::vector<float> a = c.run(first, 7);
  const std::vector<float> b = c.run(second, 7);
  ASSERT_FALSE(a.empty());
  for (float v : a) ASSERT_TRUE(std::isfinite(v) && v != kPoison) << c.name << ": " << v;
  EXPECT_EQ(a, b) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendOpsTest, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<OpCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace moe
