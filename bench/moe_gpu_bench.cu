// moe_gpu_bench: the CUDA MoE layer (router Linear, fused gating, dispatch, the plan read
// back, grouped expert GEMMs, combine: kernels/cuda, as the CUDA backend runs them) at
// Mixtral-8x7B and OLMoE shapes over 1 to 4,096 tokens, against two bounds measured in the
// same run on the same device: the device-to-device copy bandwidth (cudaMemcpy of 1 GiB:
// bytes read plus bytes written, over time) and the dense bf16 GEMM rate (cuBLAS, 8192^3,
// fp32 accumulation). Each point reports the time per layer, the GB/s of weights streamed
// (the router and every expert with rows, read once) against the copy bandwidth, and the
// TFLOP/s against the GEMM rate (issue 12's targets: >= 90% of the copy bandwidth at 64
// tokens or fewer, >= 65% of the GEMM rate at 4,096). Weights are bf16, random; routing
// follows from random inputs (near uniform over the experts). Each point runs twice: the
// expert GEMMs through cuBLAS's grouped GEMM (the plan read back first) and through our
// grouped GEMM with the plan on the device (kernels/cuda/grouped_gemm.cu).
//
// Usage: moe_gpu_bench [--shapes mixtral,olmoe] [--tokens 1,8,64,...] [--iters N]
//                      [--output results.json]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/moe_cuda.h"

namespace {

namespace cuda = moe::kernels::cuda;
using moe::kernels::DType;
using moe::kernels::MatrixRef;
using moe::kernels::WeightLayout;

#define BENCH_CHECK(expr)                                        \
  do {                                                           \
    const absl::Status bench_status = (expr);                    \
    if (!bench_status.ok()) {                                    \
      std::fprintf(stderr, "moe_gpu_bench: %s: %s\n", #expr,     \
                   std::string(bench_status.message()).c_str()); \
      std::exit(1);                                              \
    }                                                            \
  } while (0)
#define CUDA_OK(expr)                                                                        \
  do {                                                                                       \
    const cudaError_t bench_err = (expr);                                                    \
    if (bench_err != cudaSuccess) {                                                          \
      std::fprintf(stderr, "moe_gpu_bench: %s: %s\n", #expr, cudaGetErrorString(bench_err)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

template <typename T>
cuda::DeviceBuffer<T> Alloc(size_t n) {
  absl::StatusOr<cuda::DeviceBuffer<T>> b = cuda::DeviceBuffer<T>::Create(n);
  BENCH_CHECK(b.status());
  return *std::move(b);
}

// A hash of the index, scaled into [-scale, scale): random enough for weights and inputs,
// and made on the device (gigabytes of weights would take the host seconds).
__device__ float HashUniform(uint64_t i, uint32_t seed, float scale) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (static_cast<float>(z >> 40) / static_cast<float>(1ull << 24) * 2.f - 1.f) * scale;
}
__global__ void FillBf16(__nv_bfloat16* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = __float2bfloat16_rn(HashUniform(i, seed, scale));
  }
}
__global__ void FillF32(float* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = HashUniform(i, seed, scale);
  }
}

struct Shape {
  std::string name;
  int hidden, inter, experts, top_k;
};

// The fastest of five runs of `op` on `stream` (after one warm-up), in milliseconds.
template <typename Op>
float BestMs(cudaStream_t stream, Op&& op) {
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  float best = 1e30f;
  for (int i = 0; i < 6; ++i) {
    CUDA_OK(cudaEventRecord(start, stream));
    op();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    if (i > 0) best = std::min(best, ms);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  return best;
}

// Device-to-device copy bandwidth: (read + written bytes) / time of a 1 GiB copy.
double CopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  auto a = Alloc<unsigned char>(bytes), b = Alloc<unsigned char>(bytes);
  CUDA_OK(cudaMemsetAsync(a.data(), 1, bytes, stream));
  const float ms = BestMs(stream, [&] {
    CUDA_OK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * bytes / (ms * 1e-3);
}

// Dense bf16 GEMM rate: cublasGemmEx n^3, bf16 in, fp32 out and accumulation.
double GemmRate(cublasHandle_t cublas, cudaStream_t stream, int n = 8192) {
  const size_t nn = static_cast<size_t>(n) * n;
  auto a = Alloc<__nv_bfloat16>(nn), b = Alloc<__nv_bfloat16>(nn);
  auto c = Alloc<float>(nn);
  FillBf16<<<1024, 256, 0, stream>>>(a.data(), nn, 1, 1.f);
  FillBf16<<<1024, 256, 0, stream>>>(b.data(), nn, 2, 1.f);
  const float one = 1.f, zero = 0.f;
  const float ms = BestMs(stream, [&] {
    if (cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_16BF, n,
                     b.data(), CUDA_R_16BF, n, &zero, c.data(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "moe_gpu_bench: cublasGemmEx failed\n");
      std::exit(1);
    }
  });
  return 2.0 * nn * n / (ms * 1e-3);
}

// One MoE layer's weights and the largest batch's buffers.
struct Layer {
  Shape s;
  cuda::DeviceBuffer<__nv_bfloat16> router, gate_up, down;
  std::vector<MatrixRef> gu_refs, down_refs;
  cuda::DeviceBuffer<float> x, logits, weights, ws_x, ws_gu, ws_act, y, out;
  cuda::DeviceBuffer<int32_t> ids, offsets, sorted, pair_to_row;
};

Layer MakeLayer(const Shape& s, int max_tokens, cudaStream_t stream) {
  Layer l;
  l.s = s;
  const size_t H = s.hidden, I = s.inter, E = s.experts, K = s.top_k;
  const size_t P = static_cast<size_t>(max_tokens) * K;
  l.router = Alloc<__nv_bfloat16>(E * H);
  l.gate_up = Alloc<__nv_bfloat16>(E * 2 * I * H);
  l.down = Alloc<__nv_bfloat16>(E * H * I);
  FillBf16<<<4096, 256, 0, stream>>>(l.router.data(), E * H, 11, 0.05f);
  FillBf16<<<4096, 256, 0, stream>>>(l.gate_up.data(), E * 2 * I * H, 12, 0.02f);
  FillBf16<<<4096, 256, 0, stream>>>(l.down.data(), E * H * I, 13, 0.02f);
  for (size_t e = 0; e < E; ++e) {
    l.gu_refs.push_back({l.gate_up.data() + e * 2 * I * H, DType::kBF16, WeightLayout::kRowMajor,
                         static_cast<int64_t>(2 * I), static_cast<int64_t>(H)});
    l.down_refs.push_back({l.down.data() + e * H * I, DType::kBF16, WeightLayout::kRowMajor,
                           static_cast<int64_t>(H), static_cast<int64_t>(I)});
  }
  l.x = Alloc<float>(max_tokens * H);
  FillF32<<<1024, 256, 0, stream>>>(l.x.data(), max_tokens * H, 14, 1.f);
  l.logits = Alloc<float>(max_tokens * E);
  l.weights = Alloc<float>(P);
  l.ids = Alloc<int32_t>(P);
  l.offsets = Alloc<int32_t>(E + 1);
  l.sorted = Alloc<int32_t>(P);
  l.pair_to_row = Alloc<int32_t>(P);
  l.ws_x = Alloc<float>(P * H);
  l.ws_gu = Alloc<float>(P * 2 * I);
  l.ws_act = Alloc<float>(P * I);
  l.y = Alloc<float>(P * H);
  l.out = Alloc<float>(max_tokens * H);
  CUDA_OK(cudaStreamSynchronize(stream));
  return l;
}

struct Run {
  double seconds = 0;        // per layer
  int64_t weight_bytes = 0;  // router + experts with rows
  double flops = 0;
  int active_experts = 0;
};

// One layer over the first `T` rows of x, as CudaBackend + RunMoeLayer issue it: with
// `device_plan`, our grouped GEMM reads the plan on the device (no wait); otherwise the
// plan is read back and cuBLAS's grouped GEMM runs. The plan's counts are read after.
Run Layer1(Layer& l, int T, bool device_plan, cublasHandle_t cublas,
           cuda::GroupedGemmScratch& grouped, cuda::DevicePlanScratch& plan_scratch,
           cuda::DeviceScratch& scratch, cudaStream_t stream, std::vector<int32_t>& host_offsets,
           bool count) {
  const Shape& s = l.s;
  moe::kernels::LinearParams router;
  router.x = l.x.data();
  router.ldx = s.hidden;
  router.m = T;
  router.w = {l.router.data(), DType::kBF16, WeightLayout::kRowMajor, s.experts, s.hidden};
  router.y = l.logits.data();
  router.ldy = s.experts;
  BENCH_CHECK(cuda::LaunchLinear(router, cublas, stream, &scratch));
  moe::kernels::GatingParams gp;
  gp.router_logits = l.logits.data();
  gp.num_tokens = T;
  gp.num_experts = s.experts;
  gp.top_k = s.top_k;
  gp.renormalize = true;
  gp.topk_ids = l.ids.data();
  gp.topk_weights = l.weights.data();
  BENCH_CHECK(cuda::LaunchGating(gp, stream));
  moe::kernels::DispatchParams dp;
  dp.topk_ids = l.ids.data();
  dp.num_tokens = T;
  dp.top_k = s.top_k;
  dp.num_experts = s.experts;
  dp.expert_offsets = l.offsets.data();
  dp.sorted_pairs = l.sorted.data();
  dp.pair_to_row = l.pair_to_row.data();
  BENCH_CHECK(cuda::LaunchDispatch(dp, stream));
  if (!device_plan) {
    CUDA_OK(cudaMemcpyAsync(host_offsets.data(), l.offsets.data(),
                            sizeof(int32_t) * (s.experts + 1), cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
  }
  moe::kernels::ExpertFfnParams ep;
  ep.x = l.x.data();
  ep.sorted_pairs = l.sorted.data();
  ep.expert_offsets = l.offsets.data();
  ep.num_tokens = T;
  ep.top_k = s.top_k;
  ep.num_experts = s.experts;
  ep.hidden = s.hidden;
  ep.inter = s.inter;
  ep.w_gate_up = l.gu_refs.data();
  ep.w_down = l.down_refs.data();
  ep.ws_x = l.ws_x.data();
  ep.ws_gate_up = l.ws_gu.data();
  ep.ws_act = l.ws_act.data();
  ep.y = l.y.data();
  cuda::ExpertFfnLaunch launch;
  launch.expert_offsets_host = host_offsets.data();
  launch.gemm_path = cuda::FfnGemmPath::kGrouped;
  launch.cublas = cublas;
  launch.grouped_scratch = &grouped;
  if (device_plan) {
    BENCH_CHECK(cuda::LaunchExpertFfnDevicePlan(ep, plan_scratch, stream));
  } else {
    BENCH_CHECK(cuda::LaunchExpertFfn(ep, launch, stream));
  }
  moe::kernels::CombineParams cp;
  cp.y = l.y.data();
  cp.pair_to_row = l.pair_to_row.data();
  cp.topk_weights = l.weights.data();
  cp.num_tokens = T;
  cp.top_k = s.top_k;
  cp.hidden = s.hidden;
  cp.out = l.out.data();
  BENCH_CHECK(cuda::LaunchCombine(cp, stream));

  Run r;
  if (!count) return r;
  CUDA_OK(cudaMemcpyAsync(host_offsets.data(), l.offsets.data(), sizeof(int32_t) * (s.experts + 1),
                          cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const int64_t expert_bytes = 3LL * s.hidden * s.inter * 2;
  r.weight_bytes = static_cast<int64_t>(s.experts) * s.hidden * 2;
  for (int e = 0; e < s.experts; ++e) {
    const int rows = host_offsets[e + 1] - host_offsets[e];
    if (rows == 0) continue;
    ++r.active_experts;
    r.weight_bytes += expert_bytes;
    r.flops += 2.0 * rows * 3.0 * s.hidden * s.inter;
  }
  r.flops += 2.0 * T * s.experts * s.hidden;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "moe_gpu_bench: the CUDA MoE layer against the device's copy bandwidth and bf16 GEMM rate"};
  std::vector<std::string> shapes = {"mixtral", "olmoe"};
  std::vector<int> tokens = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  int iters = 20;
  std::string output;
  app.add_option("--shapes", shapes,
                 "mixtral (H 4096, I 14336, E 8, k 2), olmoe (H 2048, I 1024, E 64, k 8)")
      ->delimiter(',');
  app.add_option("--tokens", tokens, "Token counts")->delimiter(',');
  app.add_option("--iters", iters, "Timed layers per point (after one warm-up)")
      ->capture_default_str();
  app.add_option("--output", output, "Write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "moe_gpu_bench: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  absl::StatusOr<cuda::CublasHandle> cublas = cuda::CublasHandle::Create();
  BENCH_CHECK(cublas.status());
  if (cublasSetStream(cublas->get(), stream) != CUBLAS_STATUS_SUCCESS) return 1;
  absl::StatusOr<cuda::GroupedGemmScratch> grouped = cuda::GroupedGemmScratch::Create(64);
  BENCH_CHECK(grouped.status());
  cuda::DeviceScratch scratch;
  cuda::DevicePlanScratch plan_scratch;

  const double copy_bw = CopyBandwidth(stream);
  const double gemm = GemmRate(cublas->get(), stream);
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  std::printf(
      "bounds (this run): device copy %.0f GB/s (read + write), dense bf16 GEMM %.0f TFLOP/s\n",
      copy_bw / 1e9, gemm / 1e12);
  nlohmann::json results = {{"device", prop.name},
                            {"copy_bandwidth_gbps", copy_bw / 1e9},
                            {"bf16_gemm_tflops", gemm / 1e12},
                            {"points", nlohmann::json::array()}};

  const int max_tokens = *std::max_element(tokens.begin(), tokens.end());
  std::printf("%-8s %-7s %6s %7s %10s %9s %7s %9s %7s\n", "shape", "ffn", "tokens", "experts",
              "us/layer", "GB/s", "%copy", "TFLOP/s", "%gemm");
  for (const std::string& name : shapes) {
    Shape s;
    if (name == "mixtral") {
      s = {"mixtral", 4096, 14336, 8, 2};
    } else if (name == "olmoe") {
      s = {"olmoe", 2048, 1024, 64, 8};
    } else {
      std::fprintf(stderr, "moe_gpu_bench: unknown shape %s\n", name.c_str());
      return 1;
    }
    Layer layer = MakeLayer(s, max_tokens, stream);
    std::vector<int32_t> host_offsets(s.experts + 1);
    cudaEvent_t start, stop;
    CUDA_OK(cudaEventCreate(&start));
    CUDA_OK(cudaEventCreate(&stop));
    for (int T : tokens) {
      for (const bool device_plan : {false, true}) {
        auto layer1 = [&](bool count) {
          return Layer1(layer, T, device_plan, cublas->get(), *grouped, plan_scratch, scratch,
                        stream, host_offsets, count);
        };
        layer1(false);  // warm-up
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaEventRecord(start, stream));
        for (int i = 0; i < iters; ++i) layer1(false);
        CUDA_OK(cudaEventRecord(stop, stream));
        CUDA_OK(cudaEventSynchronize(stop));
        float ms = 0;
        CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
        Run r = layer1(true);  // the same inputs route the same way: its counts
        r.seconds = ms * 1e-3 / iters;
        const double gbps = r.weight_bytes / r.seconds;
        const double tflops = r.flops / r.seconds;
        const char* ffn = device_plan ? "ours" : "cublas";
        std::printf("%-8s %-7s %6d %7d %10.1f %9.0f %6.1f%% %9.1f %6.1f%%\n", s.name.c_str(), ffn,
                    T, r.active_experts, r.seconds * 1e6, gbps / 1e9, 100.0 * gbps / copy_bw,
                    tflops / 1e12, 100.0 * tflops / gemm);
        results["points"].push_back({{"shape", s.name},
                                     {"ffn", ffn},
                                     {"tokens", T},
                                     {"active_experts", r.active_experts},
                                     {"us_per_layer", r.seconds * 1e6},
                                     {"weight_gbps", gbps / 1e9},
                                     {"fraction_of_copy", gbps / copy_bw},
                                     {"tflops", tflops / 1e12},
                                     {"fraction_of_gemm", tflops / gemm}});
      }
    }
    CUDA_OK(cudaEventDestroy(start));
    CUDA_OK(cudaEventDestroy(stop));
  }
  if (!output.empty()) {
    FILE* f = std::fopen(output.c_str(), "w");
    if (f == nullptr) return 1;
    std::fputs(results.dump(2).c_str(), f);
    std::fclose(f);
  }
  CUDA_OK(cudaStreamDestroy(stream));
  return 0;
}
