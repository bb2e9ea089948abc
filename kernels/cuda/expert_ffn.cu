// Expert FFNs over the dispatched rows and the deterministic combine, and the cuBLAS
// Linear. The GEMMs are cuBLAS (row-major operands passed as their column-major
// transposes): fp32 weights through the fp32 GEMMs; bf16 weights through the Ex GEMMs with
// the activations rounded to bf16 on the way in and fp32 accumulation and output. Gather,
// SwiGLU and combine are element-wise kernels.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ffn_rows.cuh"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride kernels need no more blocks than this to fill an H100 (132 SMs).
constexpr int64_t kMaxBlocks = 132 * 16;

int BlocksFor(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
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
// gemm(T, N, m = n, n = rows, k, W, lda = k, A, ldb = lda_a, C, ldc). fp32 W and A through
// cublasSgemm; bf16 W and A through cublasGemmEx, fp32 C and accumulation.
absl::Status Gemm(cublasHandle_t cublas, bool bf16, int n, int rows, int k, const void* w,
                  const void* a, int lda_a, float* c, int ldc) {
  const float one = 1.f;
  const float zero = 0.f;
  if (!bf16) {
    MOE_CUBLAS_CHECK(cublasSgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &one,
                                 static_cast<const float*>(w), k, static_cast<const float*>(a),
                                 lda_a, &zero, c, ldc));
  } else {
    MOE_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &one, w,
                                  CUDA_R_16BF, k, a, CUDA_R_16BF, lda_a, &zero, c, CUDA_R_32F, ldc,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

// The GEMM operands of the expert FFN: ws_x and ws_act hold bf16 rows (in the first half
// of their fp32 space) when the weights are bf16.
struct FfnOperands {
  bool bf16;
  size_t elem;  // bytes of one activation element as the GEMMs read it
  const void* x_rows(const ExpertFfnParams& p, int row) const {
    return reinterpret_cast<const char*>(p.ws_x) + static_cast<size_t>(row) * p.hidden * elem;
  }
  const void* act_rows(const ExpertFfnParams& p, int row) const {
    return reinterpret_cast<const char*>(p.ws_act) + static_cast<size_t>(row) * p.inter * elem;
  }
};

absl::Status LoopGemms(const ExpertFfnParams& p, cublasHandle_t cublas,
                       const std::vector<Group>& groups, const FfnOperands& ops, bool down) {
  const int H = p.hidden;
  const int I = p.inter;
  for (const Group& g : groups) {
    if (!down) {
      if (absl::Status s = Gemm(cublas, ops.bf16, 2 * I, g.rows, H, p.w_gate_up[g.expert].data,
                                ops.x_rows(p, g.begin), H,
                                p.ws_gate_up + static_cast<size_t>(g.begin) * 2 * I, 2 * I);
          !s.ok()) {
        return s;
      }
    } else {
      if (absl::Status s =
              Gemm(cublas, ops.bf16, H, g.rows, I, p.w_down[g.expert].data,
                   ops.act_rows(p, g.begin), I, p.y + static_cast<size_t>(g.begin) * H, H);
          !s.ok()) {
        return s;
      }
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

namespace {

// The dtype of the first expert with rows (the one every expert's weights must have).
DType FirstDType(const ExpertFfnParams& p, const int32_t* offsets) {
  for (int e = 0; e < p.num_experts; ++e) {
    if (offsets[e + 1] > offsets[e]) return p.w_gate_up[e].dtype;
  }
  return DType::kF32;
}

}  // namespace

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
    if (gu.layout != WeightLayout::kRowMajor || dn.layout != WeightLayout::kRowMajor) {
      return absl::UnimplementedError(absl::StrFormat(
          "expert_ffn: expert %d: the CUDA expert FFN reads row-major weights only", e));
    }
    if (gu.dtype != dn.dtype || gu.dtype != FirstDType(p, offsets)) {
      return absl::UnimplementedError(
          absl::StrFormat("expert_ffn: expert %d: every expert's weights must share one dtype", e));
    }
    if (gu.rows != 2 * p.inter || gu.cols != p.hidden || dn.rows != p.hidden ||
        dn.cols != p.inter) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d's weights are not [2I, H] and [H, I]", e));
    }
  }
  if (launch.gemm_path == FfnGemmPath::kGrouped &&
      (launch.grouped_scratch == nullptr ||
       launch.grouped_scratch->max_experts() < p.num_experts)) {
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
  const bool bf16 = FirstDType(p, launch.expert_offsets_host) == DType::kBF16;
  const FfnOperands ops{bf16, bf16 ? sizeof(__nv_bfloat16) : sizeof(float)};
  auto* x_bf16 = reinterpret_cast<__nv_bfloat16*>(p.ws_x);
  auto* act_bf16 = reinterpret_cast<__nv_bfloat16*>(p.ws_act);
  auto silu_mul = [&]() -> absl::Status {
    const int blocks = BlocksFor(static_cast<int64_t>(rows) * I);
    if (bf16) {
      SiluMulRowsKernel<<<blocks, kThreads, 0, stream>>>(p.ws_gate_up, RowCount{rows}, I, act_bf16);
    } else {
      SiluMulRowsKernel<<<blocks, kThreads, 0, stream>>>(p.ws_gate_up, RowCount{rows}, I, p.ws_act);
    }
    MOE_CUDA_CHECK_LAUNCH(stream);
    return absl::OkStatus();
  };

  const int gather_blocks = BlocksFor(static_cast<int64_t>(rows) * H);
  if (bf16) {
    GatherRowsKernel<<<gather_blocks, kThreads, 0, stream>>>(p.x, p.sorted_pairs, RowCount{rows},
                                                             p.top_k, H, x_bf16);
  } else {
    GatherRowsKernel<<<gather_blocks, kThreads, 0, stream>>>(p.x, p.sorted_pairs, RowCount{rows},
                                                             p.top_k, H, p.ws_x);
  }
  MOE_CUDA_CHECK_LAUNCH(stream);

  MOE_CUBLAS_CHECK(cublasSetStream(launch.cublas, stream));
  MOE_CUBLAS_CHECK(cublasSetPointerMode(launch.cublas, CUBLAS_POINTER_MODE_HOST));
  const std::vector<Group> groups = NonEmptyGroups(p, launch);
  const int num_groups = static_cast<int>(groups.size());

  if (launch.gemm_path == FfnGemmPath::kLoop) {
    if (absl::Status s = LoopGemms(p, launch.cublas, groups, ops, /*down=*/false); !s.ok()) {
      return s;
    }
  } else {
    // Six pointer arrays of num_groups entries: A, B, C of gate_up, then of down.
    GroupedGemmScratch& scratch = *launch.grouped_scratch;
    MOE_CUDA_CHECK(cudaEventSynchronize(scratch.uploaded_));  // the last upload has left
    void** h = scratch.host_ptrs_;
    for (int g = 0; g < num_groups; ++g) {
      const Group& gr = groups[g];
      // The weights and inputs are read only; cuBLAS's arrays are of non-const pointers.
      h[0 * num_groups + g] = const_cast<void*>(p.w_gate_up[gr.expert].data);
      h[1 * num_groups + g] = const_cast<void*>(ops.x_rows(p, gr.begin));
      h[2 * num_groups + g] = p.ws_gate_up + static_cast<size_t>(gr.begin) * 2 * I;
      h[3 * num_groups + g] = const_cast<void*>(p.w_down[gr.expert].data);
      h[4 * num_groups + g] = const_cast<void*>(ops.act_rows(p, gr.begin));
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
    auto grouped = [&](const std::vector<int>& m, const std::vector<int>& k,
                       const std::vector<int>& lda, const std::vector<int>& ldc,
                       void** arrays) -> absl::Status {
      if (!bf16) {
        MOE_CUBLAS_CHECK(cublasSgemmGroupedBatched(
            launch.cublas, trans_a.data(), trans_b.data(), m.data(), n.data(), k.data(),
            alpha.data(), reinterpret_cast<const float* const*>(arrays), lda.data(),
            reinterpret_cast<const float* const*>(arrays + num_groups), lda.data(), beta.data(),
            reinterpret_cast<float* const*>(arrays + 2 * num_groups), ldc.data(), num_groups,
            group_size.data()));
      } else {
        MOE_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
            launch.cublas, trans_a.data(), trans_b.data(), m.data(), n.data(), k.data(),
            alpha.data(), arrays, CUDA_R_16BF, lda.data(), arrays + num_groups, CUDA_R_16BF,
            lda.data(), beta.data(), arrays + 2 * num_groups, CUDA_R_32F, ldc.data(), num_groups,
            group_size.data(), CUBLAS_COMPUTE_32F));
      }
      return absl::OkStatus();
    };
    if (absl::Status s = grouped(m_gu, k_gu, ld_h, ld_2i, d); !s.ok()) return s;
    if (absl::Status s = silu_mul(); !s.ok()) return s;
    // down: Y[rows, H] = A[rows, I] W_down[H, I]^T.
    const std::vector<int> m_d(num_groups, H), k_d(num_groups, I), ld_i(num_groups, I);
    if (absl::Status s = grouped(m_d, k_d, ld_i, ld_h, d + 3 * num_groups); !s.ok()) return s;
  } else {
    if (absl::Status s = silu_mul(); !s.ok()) return s;
    if (absl::Status s = LoopGemms(p, launch.cublas, groups, ops, /*down=*/true); !s.ok()) {
      return s;
    }
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
  if (p.w.layout != WeightLayout::kRowMajor) {
    return absl::UnimplementedError("linear: the CUDA Linear reads row-major weights only");
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

// out[r, c] = bf16(x[r * ldx + c]), round to nearest even: a dense [rows, cols] copy.
__global__ void ToBf16Kernel(const float* __restrict__ x, int64_t ldx, int rows, int cols,
                             __nv_bfloat16* __restrict__ out) {
  const int64_t total = static_cast<int64_t>(rows) * cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / cols;
    const int64_t c = idx - r * cols;
    out[idx] = __float2bfloat16_rn(x[r * ldx + c]);
  }
}

}  // namespace

absl::StatusOr<void*> DeviceScratch::Get(size_t bytes) {
  if (buffer_.bytes() < bytes) {
    buffer_ = DeviceBuffer<unsigned char>();  // free first: the old one is not needed
    absl::StatusOr<DeviceBuffer<unsigned char>> grown =
        DeviceBuffer<unsigned char>::Create(bytes + bytes / 2);
    if (!grown.ok()) return grown.status();
    buffer_ = *std::move(grown);
    ++generation_;
  }
  return static_cast<void*>(buffer_.data());
}

absl::Status LaunchLinear(const LinearParams& p, cublasHandle_t cublas, cudaStream_t stream,
                          DeviceScratch* scratch) {
  if (absl::Status s = CanImplement(p); !s.ok()) return s;
  if (p.m == 0) return absl::OkStatus();
  if (cublas == nullptr) return absl::InvalidArgumentError("linear: no cuBLAS handle");
  const int N = static_cast<int>(p.w.rows);
  const int K = static_cast<int>(p.w.cols);
  MOE_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  MOE_CUBLAS_CHECK(cublasSetPointerMode(cublas, CUBLAS_POINTER_MODE_HOST));
  // Row-major y[m, N] = x[m, K] W[N, K]^T as column-major y^T = W^T(op T) x^T.
  if (p.w.dtype == DType::kF32) {
    if (absl::Status s = Gemm(cublas, false, N, p.m, K, p.w.data, p.x, static_cast<int>(p.ldx), p.y,
                              static_cast<int>(p.ldy));
        !s.ok()) {
      return s;
    }
  } else {
    if (scratch == nullptr) {
      return absl::InvalidArgumentError("linear: bf16 weights need a DeviceScratch");
    }
    absl::StatusOr<void*> xb = scratch->Get(static_cast<size_t>(p.m) * K * sizeof(__nv_bfloat16));
    if (!xb.ok()) return xb.status();
    auto* x_bf16 = static_cast<__nv_bfloat16*>(*xb);
    ToBf16Kernel<<<BlocksFor(static_cast<int64_t>(p.m) * K), kThreads, 0, stream>>>(p.x, p.ldx, p.m,
                                                                                    K, x_bf16);
    MOE_CUDA_CHECK_LAUNCH(stream);
    if (absl::Status s =
            Gemm(cublas, true, N, p.m, K, p.w.data, x_bf16, K, p.y, static_cast<int>(p.ldy));
        !s.ok()) {
      return s;
    }
  }
  if (p.bias != nullptr) {
    AddBiasKernel<<<BlocksFor(static_cast<int64_t>(p.m) * N), kThreads, 0, stream>>>(
        p.y, p.ldy, p.bias, p.m, N);
    MOE_CUDA_CHECK_LAUNCH(stream);
  }
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
