// The MoE layer function (engine/moe_layer.h) through the CUDA backend against the same
// function through the CPU backend, the oracle: same random router and experts (packed for
// the CPU, row-major fp32 in device memory for CUDA), the same tokens. Tokens per expert
// must match exactly, the layer output within 1e-4 relative. Skips without a device.
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/expert_source.h"
#include "engine/moe_layer.h"
#include "kernels/cpu/gemm.h"

namespace moe {
namespace {

using kernels::DType;
using kernels::MatrixRef;
using kernels::WeightLayout;

// A row-major fp32 matrix in `backend`'s weight layout and memory; the buffer is kept.
MatrixRef Place(Backend& backend, const std::vector<float>& w, int64_t rows, int64_t cols,
                std::vector<Buffer>* keep) {
  const WeightLayout layout = backend.weight_layout();
  const size_t bytes = kernels::MatrixBytes(DType::kF32, layout, rows, cols);
  std::vector<char> host(bytes);
  if (layout == WeightLayout::kPanels16) {
    const kernels::cpu::PackSource src{w.data(), kernels::cpu::SourceType::kF32, rows};
    kernels::cpu::PackPanels(std::span(&src, 1), cols, DType::kF32, host.data());
  } else {
    std::memcpy(host.data(), w.data(), bytes);
  }
  absl::StatusOr<Buffer> buf = backend.Allocate(backend.compute_memory(), bytes);
  EXPECT_TRUE(buf.ok()) << buf.status();
  EXPECT_TRUE(backend.CopyToBackend(buf->data(), host.data(), bytes).ok());
  keep->push_back(*std::move(buf));
  return {keep->back().data(), DType::kF32, layout, rows, cols};
}

struct LayerRun {
  std::vector<float> out;
  std::vector<int32_t> expert_tokens;
};

LayerRun RunLayer(Backend& backend, int T, int H, int I, int E, int K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto random = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (float& f : v) f = scale * nd(rng);
    return v;
  };
  std::vector<Buffer> keep;
  MoeLayerSpec spec;
  spec.hidden = H;
  spec.inter = I;
  spec.num_experts = E;
  spec.top_k = K;
  spec.renormalize = true;
  spec.router = Place(backend, random(static_cast<size_t>(E) * H, 0.5f), E, H, &keep);
  std::vector<std::vector<MatrixRef>> gu(1), dn(1);
  for (int e = 0; e < E; ++e) {
    gu[0].push_back(Place(backend, random(size_t{2} * I * H, 0.1f), 2 * I, H, &keep));
    dn[0].push_back(Place(backend, random(size_t{1} * H * I, 0.1f), H, I, &keep));
  }
  ResidentExperts experts(gu, dn);
  const std::vector<float> x = random(static_cast<size_t>(T) * H, 1.f);
  const size_t bytes = x.size() * sizeof(float);
  absl::StatusOr<Buffer> dx = backend.Allocate(backend.compute_memory(), bytes);
  absl::StatusOr<Buffer> dout = backend.Allocate(backend.compute_memory(), bytes);
  EXPECT_TRUE(dx.ok() && dout.ok());
  EXPECT_TRUE(backend.CopyToBackend(dx->data(), x.data(), bytes).ok());
  Workspace ws(&backend);
  LayerRun run;
  run.expert_tokens.assign(E, -1);
  const absl::Status s = RunMoeLayer(backend, spec, experts, 0, dx->as<float>(), T, nullptr, ws,
                                     dout->as<float>(), run.expert_tokens.data());
  EXPECT_TRUE(s.ok()) << s;
  run.out.resize(x.size());
  EXPECT_TRUE(backend.CopyToHost(run.out.data(), dout->data(), bytes).ok());
  return run;
}

TEST(CudaBackendTest, MoeLayerMatchesTheCpuBackend) {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
  if (!cuda.ok()) GTEST_SKIP() << cuda.status();
  CpuBackend cpu;
  for (auto [T, E, K] : {std::tuple{1, 8, 2}, std::tuple{37, 64, 8}, std::tuple{256, 8, 2}}) {
    const LayerRun want = RunLayer(cpu, T, 192, 96, E, K, 7 + T);
    const LayerRun got = RunLayer(**cuda, T, 192, 96, E, K, 7 + T);
    EXPECT_EQ(got.expert_tokens, want.expert_tokens) << "T=" << T;
    double num = 0, den = 0;
    for (size_t i = 0; i < want.out.size(); ++i) {
      num += (got.out[i] - want.out[i]) * static_cast<double>(got.out[i] - want.out[i]);
      den += static_cast<double>(want.out[i]) * want.out[i];
    }
    EXPECT_LE(std::sqrt(num / den), 1e-4) << "T=" << T;
  }
}

TEST(CudaBackendTest, OpsItDoesNotHaveYetAreUnimplemented) {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
  if (!cuda.ok()) GTEST_SKIP() << cuda.status();
  EXPECT_EQ((*cuda)->RmsNorm({}).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ((*cuda)->PagedAttention({}).code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace moe
