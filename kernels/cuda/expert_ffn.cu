// Expert FFNs over the dispatched rows and the deterministic combine. The GEMMs are
// cuBLAS fp32 (row-major operands passed as their column-major transposes); gather,
// SwiGLU and combine are element-wise kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride kernels need no more blocks than this to fill an H100 (132 SMs).
constexpr int64_t kMaxBlocks = 132 * 16;

int BlocksFor(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// ws_x[row] = x[sorted_pairs[row] / K], rows [0, num_rows).
__global__ void GatherKernel(const float* __restrict__ x, const int32_t* __restrict__ sorted_pairs,
                             int num_rows, int top_k, int hidden, float* __restrict__ ws_x) {
  const int64_t n = static_cast<int64_t>(num_rows) * hidden;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / hidden;
    const int64_t h = idx - row * hidden;
    const int64_t token = sorted_pairs[row] / top_k;
    ws_x[idx] = x[token * hidden + h];
  }
}

// act[r, i] = silu(g[r, i]) * g[r, I + i], with silu(g) = g / (1 + exp(-g)) as in
// kernels::SiluMul.
__global__ void SiluMulKernel(const float* __restrict__ gate_up, int num_rows, int inter,
                              float* __restrict__ act) {
  const int64_t n = static_cast<int64_t>(num_rows) * inter;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / inter;
    const int64_t i = idx - row * inter;
    const float g = gate_up[row * 2 * inter + i];
    const float u = gate_up[row * 2 * inter + inter + i];
    act[idx] = g / (1.f + expf(-g)) * u;
  }
}

// out[t, h] = sum_j w[t, j] * y[row(t, j), h], j ascending, unused slots skipped. Explicit
// round-to-nearest multiply and add (no FMA contraction) reproduce the CPU reference's
// arithmetic.
__global__ void CombineKernel(CombineParams p) {
  const int64_t n = static_cast<int64_t>(p.num_tokens) * p.hidden;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / p.hidden;
    const int64_t h = idx - t * p.hidden;
    float acc = 0.f;
    for (int j = 0; j < p.top_k; ++j) {
      const int32_t row = p.pair_to_row[t * p.top_k + j];
      if (row < 0) continue;
      const float w = p.topk_weights[t * p.top_k + j];
      acc = __fadd_rn(acc, __fmul_rn(w, p.y[static_cast<int64_t>(row) * p.hidden + h]));
    }
    p.out[idx] = acc;
  }
}

// The non-empty experts of the plan: (expert, first row, rows).
struct Group {
  int expert;
  int begin;
  int rows;
};

std::vector<Group> NonEmptyGroups(const ExpertFfnParams& p, const ExpertFfnLaunch& launch) {
  std::vector<Group> groups;
  for (int e = 0; e < p.num_experts; ++e) {
    const int begin = launch.expert_offsets_host[e];
    const int rows = launch.expert_offsets_host[e + 1] - begin;
    if (rows > 0) groups.push_back({e, begin, rows});
  }
  return groups;
}

// Row-major C[rows, n] = A[rows, k] * W[n, k]^T is column-major C^T = W^T(op T) * A^T:
// cublasSgemm(T, N, m = n, n = rows, k, W, lda = k, A, ldb = k, C, ldc = n).
const float* Data(const MatrixRef& w) { return static_cast<const float*>(w.data); }

absl::Status LoopGemms(const ExpertFfnParams& p, cublasHandle_t cublas,
                       const std::vector<Group>& groups, bool down) {
  const float one = 1.f;
  const float zero = 0.f;
  const int H = p.hidden;
  const int I = p.inter;
  for (const Group& g : groups) {
    if (!down) {
      MOE_CUBLAS_CHECK(cublasSgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, 2 * I, g.rows, H, &one,
                                   Data(p.w_gate_up[g.expert]), H,
                                   p.ws_x + static_cast<size_t>(g.begin) * H, H, &zero,
                                   p.ws_gate_up + static_cast<size_t>(g.begin) * 2 * I, 2 * I));
    } else {
      MOE_CUBLAS_CHECK(cublasSgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, H, g.rows, I, &one,
                                   Data(p.w_down[g.expert]), I,
                                   p.ws_act + static_cast<size_t>(g.begin) * I, I, &zero,
                                   p.y + static_cast<size_t>(g.begin) * H, H));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ------------------------------------------------------------------ GroupedGemmScratch

absl::StatusOr<GroupedGemmScratch> GroupedGemmScratch::Create(int max_experts) {
  if (max_experts < 1 || max_experts > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GroupedGemmScratch: max_experts=%d outside [1, %d]", max_experts, kMaxExperts));
  }
  GroupedGemmScratch s;
  s.max_experts_ = max_experts;
  const size_t bytes = sizeof(void*) * 6 * max_experts;
  void* host = nullptr;
  MOE_CUDA_CHECK(cudaMallocHost(&host, bytes));
  s.host_ptrs_ = static_cast<void**>(host);
  void* device = nullptr;
  MOE_CUDA_CHECK(cudaMalloc(&device, bytes));
  s.device_ptrs_ = static_cast<void**>(device);
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&s.uploaded_, cudaEventDisableTiming));
  return s;
}

GroupedGemmScratch::GroupedGemmScratch(GroupedGemmScratch&& other) noexcept
    : max_experts_(std::exchange(other.max_experts_, 0)),
      host_ptrs_(std::exchange(other.host_ptrs_, nullptr)),
      device_ptrs_(std::exchange(other.device_ptrs_, nullptr)),
      uploaded_(std::exchange(other.uploaded_, nullptr)) {}

GroupedGemmScratch& GroupedGemmScratch::operator=(GroupedGemmScratch&& other) noexcept {
  if (this != &other) {
    Reset();
    max_experts_ = std::exchange(other.max_experts_, 0);
    host_ptrs_ = std::exchange(other.host_ptrs_, nullptr);
    device_ptrs_ = std::exchange(other.device_ptrs_, nullptr);
    uploaded_ = std::exchange(other.uploaded_, nullptr);
  }
  return *this;
}

GroupedGemmScratch::~GroupedGemmScratch() { Reset(); }

void GroupedGemmScratch::Reset() {
  if (uploaded_ != nullptr) {
    MOE_CUDA_CHECK_FATAL(cudaEventSynchronize(uploaded_));
    MOE_CUDA_CHECK_FATAL(cudaEventDestroy(uploaded_));
  }
  if (host_ptrs_ != nullptr) MOE_CUDA_CHECK_FATAL(cudaFreeHost(host_ptrs_));
  if (device_ptrs_ != nullptr) MOE_CUDA_CHECK_FATAL(cudaFree(device_ptrs_));
  uploaded_ = nullptr;
  host_ptrs_ = nullptr;
  device_ptrs_ = nullptr;
  max_experts_ = 0;
}

// ------------------------------------------------------------------------ expert FFN

absl::Status CanImplement(const ExpertFfnParams& p, const ExpertFfnLaunch& launch) {
  if (p.x == nullptr || p.sorted_pairs == nullptr || p.expert_offsets == nullptr ||
      launch.expert_offsets_host == nullptr || p.w_gate_up == nullptr || p.w_down == nullptr ||
      p.ws_x == nullptr || p.ws_gate_up == nullptr || p.ws_act == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("expert_ffn: null buffer");
  }
  if (launch.cublas == nullptr) return absl::InvalidArgumentError("expert_ffn: no cuBLAS handle");
  if (p.hidden < 1 || p.inter < 1 || p.top_k < 1 || p.num_experts < 1 || p.num_tokens < 0 ||
      p.num_experts > kMaxExperts) {
    return absl::InvalidArgumentError("expert_ffn: bad shape");
  }
  // cuBLAS takes int dimensions and leading dimensions.
  if (2 * static_cast<int64_t>(p.inter) > INT32_MAX ||
      static_cast<int64_t>(p.num_tokens) * p.top_k > INT32_MAX) {
    return absl::InvalidArgumentError("expert_ffn: dimension overflows int32");
  }
  const int64_t pairs = static_cast<int64_t>(p.num_tokens) * p.top_k;
  const int32_t* offsets = launch.expert_offsets_host;
  if (offsets[0] != 0) return absl::InvalidArgumentError("expert_ffn: expert_offsets[0] != 0");
  for (int e = 0; e < p.num_experts; ++e) {
    const int32_t begin = offsets[e];
    const int32_t end = offsets[e + 1];
    if (end < begin || end > pairs) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "expert_ffn: expert_offsets not a plan of %d pairs at expert %d", pairs, e));
    }
    if (end == begin) continue;
    const MatrixRef& gu = p.w_gate_up[e];
    const MatrixRef& dn = p.w_down[e];
    if (gu.data == nullptr || dn.data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d has rows but no weights", e));
    }
    if (gu.dtype != DType::kF32 || dn.dtype != DType::kF32 ||
        gu.layout != WeightLayout::kRowMajor || dn.layout != WeightLayout::kRowMajor) {
      return absl::UnimplementedError(absl::StrFormat(
          "expert_ffn: expert %d: the CUDA expert FFN reads fp32 row-major weights only", e));
    }
    if (gu.rows != 2 * p.inter || gu.cols != p.hidden || dn.rows != p.hidden ||
        dn.cols != p.inter) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d's weights are not [2I, H] and [H, I]", e));
    }
  }
  if (launch.gemm_path == FfnGemmPath::kGrouped &&
      (launch.grouped_scratch == nullptr || launch.grouped_scratch->max_experts() < p.num_experts)) {
    return absl::InvalidArgumentError(
        "expert_ffn: the grouped path needs a GroupedGemmScratch of at least E experts");
  }
  return absl::OkStatus();
}

absl::Status LaunchExpertFfn(const ExpertFfnParams& p, const ExpertFfnLaunch& launch,
                             cudaStream_t stream) {
  if (absl::Status s = CanImplement(p, launch); !s.ok()) return s;
  const int rows = launch.expert_offsets_host[p.num_experts];
  if (rows == 0) return absl::OkStatus();
  const int H = p.hidden;
  const int I = p.inter;

  GatherKernel<<<BlocksFor(static_cast<int64_t>(rows) * H), kThreads, 0, stream>>>(
      p.x, p.sorted_pairs, rows, p.top_k, H, p.ws_x);
  MOE_CUDA_CHECK_LAUNCH(stream);

  MOE_CUBLAS_CHECK(cublasSetStream(launch.cublas, stream));
  MOE_CUBLAS_CHECK(cublasSetPointerMode(launch.cublas, CUBLAS_POINTER_MODE_HOST));
  const std::vector<Group> groups = NonEmptyGroups(p, launch);
  const int num_groups = static_cast<int>(groups.size());

  if (launch.gemm_path == FfnGemmPath::kLoop) {
    if (absl::Status s = LoopGemms(p, launch.cublas, groups, /*down=*/false); !s.ok()) return s;
  } else {
    // Six pointer arrays of num_groups entries: A, B, C of gate_up, then of down.
    GroupedGemmScratch& scratch = *launch.grouped_scratch;
    MOE_CUDA_CHECK(cudaEventSynchronize(scratch.uploaded_));  // the last upload has left
    void** h = scratch.host_ptrs_;
    for (int g = 0; g < num_groups; ++g) {
      const Group& gr = groups[g];
      h[0 * num_groups + g] = const_cast<float*>(Data(p.w_gate_up[gr.expert]));  // read only
      h[1 * num_groups + g] = p.ws_x + static_cast<size_t>(gr.begin) * H;
      h[2 * num_groups + g] = p.ws_gate_up + static_cast<size_t>(gr.begin) * 2 * I;
      h[3 * num_groups + g] = const_cast<float*>(Data(p.w_down[gr.expert]));  // read only
      h[4 * num_groups + g] = p.ws_act + static_cast<size_t>(gr.begin) * I;
      h[5 * num_groups + g] = p.y + static_cast<size_t>(gr.begin) * H;
    }
    MOE_CUDA_CHECK(cudaMemcpyAsync(scratch.device_ptrs_, h, sizeof(void*) * 6 * num_groups,
                                   cudaMemcpyHostToDevice, stream));
    MOE_CUDA_CHECK(cudaEventRecord(scratch.uploaded_, stream));
  }

  if (launch.gemm_path == FfnGemmPath::kGrouped) {
    void** d = launch.grouped_scratch->device_ptrs_;
    const std::vector<cublasOperation_t> trans_a(num_groups, CUBLAS_OP_T);
    const std::vector<cublasOperation_t> trans_b(num_groups, CUBLAS_OP_N);
    const std::vector<float> alpha(num_groups, 1.f);
    const std::vector<float> beta(num_groups, 0.f);
    const std::vector<int> group_size(num_groups, 1);
    std::vector<int> n(num_groups);
    for (int g = 0; g < num_groups; ++g) n[g] = groups[g].rows;
    // gate_up: C[rows, 2I] = X[rows, H] W_gate_up[2I, H]^T.
    const std::vector<int> m_gu(num_groups, 2 * I), k_gu(num_groups, H), ld_h(num_groups, H),
        ld_2i(num_groups, 2 * I);
    MOE_CUBLAS_CHECK(cublasSgemmGroupedBatched(
        launch.cublas, trans_a.data(), trans_b.data(), m_gu.data(), n.data(), k_gu.data(), alpha.data(),
        reinterpret_cast<const float* const*>(d + 0 * num_groups), ld_h.data(),
        reinterpret_cast<const float* const*>(d + 1 * num_groups), ld_h.data(), beta.data(),
        reinterpret_cast<float* const*>(d + 2 * num_groups), ld_2i.data(), num_groups,
        group_size.data()));
    SiluMulKernel<<<BlocksFor(static_cast<int64_t>(rows) * I), kThreads, 0, stream>>>(
        p.ws_gate_up, rows, I, p.ws_act);
    MOE_CUDA_CHECK_LAUNCH(stream);
    // down: Y[rows, H] = A[rows, I] W_down[H, I]^T.
    const std::vector<int> m_d(num_groups, H), k_d(num_groups, I), ld_i(num_groups, I);
    MOE_CUBLAS_CHECK(cublasSgemmGroupedBatched(
        launch.cublas, trans_a.data(), trans_b.data(), m_d.data(), n.data(), k_d.data(), alpha.data(),
        reinterpret_cast<const float* const*>(d + 3 * num_groups), ld_i.data(),
        reinterpret_cast<const float* const*>(d + 4 * num_groups), ld_i.data(), beta.data(),
        reinterpret_cast<float* const*>(d + 5 * num_groups), ld_h.data(), num_groups,
        group_size.data()));
  } else {
    SiluMulKernel<<<BlocksFor(static_cast<int64_t>(rows) * I), kThreads, 0, stream>>>(
        p.ws_gate_up, rows, I, p.ws_act);
    MOE_CUDA_CHECK_LAUNCH(stream);
    if (absl::Status s = LoopGemms(p, launch.cublas, groups, /*down=*/true); !s.ok()) return s;
  }
  MOE_CUDA_DEBUG_SYNC(stream);
  return absl::OkStatus();
}

// --------------------------------------------------------------------------- combine

absl::Status CanImplement(const CombineParams& p) {
  if (p.y == nullptr || p.pair_to_row == nullptr || p.topk_weights == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError("combine: null buffer");
  }
  if (p.num_tokens < 0 || p.top_k < 1 || p.hidden < 1) {
    return absl::InvalidArgumentError("combine: bad shape");
  }
  if (static_cast<int64_t>(p.num_tokens) * p.top_k > INT32_MAX) {
    return absl::InvalidArgumentError("combine: T*K overflows int32");
  }
  return absl::OkStatus();
}

absl::Status LaunchCombine(const CombineParams& p, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  CombineKernel<<<BlocksFor(static_cast<int64_t>(p.num_tokens) * p.hidden), kThreads, 0, stream>>>(
      p);
  MOE_CUDA_CHECK_LAUNCH(stream);
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------- linear

absl::Status CanImplement(const LinearParams& p) {
  if (p.m < 0) return absl::InvalidArgumentError("linear: m < 0");
  if (p.m > 0 && (p.x == nullptr || p.y == nullptr || p.w.data == nullptr)) {
    return absl::InvalidArgumentError("linear: null buffer");
  }
  if (p.w.dtype != DType::kF32 || p.w.layout != WeightLayout::kRowMajor) {
    return absl::UnimplementedError("linear: the CUDA Linear reads fp32 row-major weights only");
  }
  if (p.x_rows != nullptr) {
    return absl::UnimplementedError("linear: the CUDA Linear has no row indirection");
  }
  if (p.w.rows < 1 || p.w.cols < 1 || p.w.rows > INT32_MAX || p.w.cols > INT32_MAX ||
      p.ldx < p.w.cols || p.ldy < p.w.rows || p.ldx > INT32_MAX || p.ldy > INT32_MAX) {
    return absl::InvalidArgumentError("linear: bad shape or leading dimension");
  }
  return absl::OkStatus();
}

namespace {

// y[r, n] += bias[n].
__global__ void AddBiasKernel(float* __restrict__ y, int64_t ldy, const float* __restrict__ bias,
                              int rows, int n) {
  const int64_t total = static_cast<int64_t>(rows) * n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / n;
    const int64_t c = idx - r * n;
    y[r * ldy + c] += bias[c];
  }
}

}  // namespace

absl::Status LaunchLinear(const LinearParams& p, cublasHandle_t cublas, cudaStream_t stream) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.m == 0) return absl::OkStatus();
  if (cublas == nullptr) return absl::InvalidArgumentError("linear: no cuBLAS handle");
  const float one = 1.f;
  const float zero = 0.f;
  const int N = static_cast<int>(p.w.rows);
  const int K = static_cast<int>(p.w.cols);
  MOE_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  MOE_CUBLAS_CHECK(cublasSetPointerMode(cublas, CUBLAS_POINTER_MODE_HOST));
  // Row-major y[m, N] = x[m, K] W[N, K]^T as column-major y^T = W^T(op T) x^T.
  MOE_CUBLAS_CHECK(cublasSgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, p.m, K, &one,
                               static_cast<const float*>(p.w.data), K, p.x,
                               static_cast<int>(p.ldx), &zero, p.y, static_cast<int>(p.ldy)));
  if (p.bias != nullptr) {
    AddBiasKernel<<<BlocksFor(static_cast<int64_t>(p.m) * N), kThreads, 0, stream>>>(
        p.y, p.ldy, p.bias, p.m, N);
    MOE_CUDA_CHECK_LAUNCH(stream);
  }
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
