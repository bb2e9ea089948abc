// Backend ops on CUDA against the CPU backend, table-driven in the style of ggml's
// test-backend-ops: each case builds fresh random inputs, runs the op through both
// backends (the same code: inputs copied into the backend's compute memory, the output
// poisoned first and read back), and compares within a tolerance per op. Skips without a
// CUDA device. Issue 12's first piece: the row-wise and element-wise ops.
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
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

std::vector<OpCase> Cases() {
  std::vector<OpCase> cases;
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
