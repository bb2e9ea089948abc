// CUDA kernels of the MoE layer (DESIGN.md section 3): routing (gating), dispatch, the
// expert FFNs and the combine, plus a cuBLAS Linear. They take the Params structs of
// kernels/params.h, shared with the CPU kernels (kernels/cpu), which are their oracle
// (tests/gpu/moe_cuda_test.cc). Every pointer is device memory unless a comment says host. Each
// launcher checks CanImplement(params) on the host, enqueues on `stream` and returns the launch
// status; results are ready when the stream is. Glossary: T tokens, H hidden, I expert
// intermediate, E experts, K top-k, P = T*K (token, slot) pairs.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/params.h"

namespace moe::kernels::cuda {

// The CPU reference's limit: one warp walks all E probabilities of a token.
inline constexpr int kMaxExperts = ::moe::kernels::kMaxExperts;

// ---------------------------------------------------------------------------- gating
// kernels::GatingParams (device pointers): p = softmax_fp32(logits); the K largest p in
// descending order, ties to the lower expert id; optional renormalisation; the per-token
// weak_rank, route_top_k and route_top_p overrides exactly as kernels/params.h states them
// (unused slots id -1, weight 0). One warp per token.
absl::Status CanImplement(const GatingParams& p);
absl::Status LaunchGating(const GatingParams& p, cudaStream_t stream);

// -------------------------------------------------------------------------- dispatch
// kernels::DispatchParams (device pointers): histogram per expert, exclusive scan, stable
// counting sort of the P = T*K pairs by expert (ascending pair index inside an expert;
// the placement is a deterministic ranked scan, never the order of atomics), so the
// arrays are bit-identical to the CPU reference. One thread block.
absl::Status CanImplement(const DispatchParams& p);
absl::Status LaunchDispatch(const DispatchParams& p, cudaStream_t stream);

// ------------------------------------------------------------------------ expert FFN
// How the per-expert GEMMs are issued. kGrouped: one grouped-GEMM launch
// (cublasSgemmGroupedBatched, cublasGemmGroupedBatchedEx for bf16) per GEMM over the
// experts with rows (DESIGN.md section 3); needs a GroupedGemmScratch.
// kLoop: one cublasSgemm per expert with rows, all on `stream` (the fallback).
enum class FfnGemmPath { kGrouped, kLoop };

class GroupedGemmScratch;

// What the CUDA expert FFN needs besides kernels::ExpertFfnParams.
struct ExpertFfnLaunch {
  // Host copy of expert_offsets (the plan is read back once per layer; DESIGN.md section
  // 3): cuBLAS takes GEMM shapes on the host. Must equal the device array.
  const int32_t* expert_offsets_host = nullptr;  // [E + 1] host
  FfnGemmPath gemm_path = FfnGemmPath::kLoop;
  cublasHandle_t cublas = nullptr;                // its stream is set to `stream` by the launcher
  GroupedGemmScratch* grouped_scratch = nullptr;  // required for kGrouped
};

// kernels::ExpertFfnParams (device pointers; w_gate_up and w_down are host arrays of
// MatrixRefs to device memory): gather x rows into ws_x, G = X W_gate_up[e]^T,
// A = silu(G[:, :I]) * G[:, I:], Y = A W_down[e]^T. Row-major weights, every expert of one
// dtype: fp32 (cuBLAS fp32 GEMMs, no TF32) or bf16 (the gathered rows and A rounded to
// bf16 into the first half of ws_x and ws_act, cuBLAS bf16 GEMMs with fp32 accumulation
// and fp32 G and Y).
absl::Status CanImplement(const ExpertFfnParams& p, const ExpertFfnLaunch& launch);
absl::Status LaunchExpertFfn(const ExpertFfnParams& p, const ExpertFfnLaunch& launch,
                             cudaStream_t stream);

// Pointer arrays of the grouped GEMMs: staged in pinned host memory, copied to the device
// on the launch stream. An event guards the staging buffer, so a second launch waits for
// the previous copy (not for the GEMMs) before refilling it.
class GroupedGemmScratch {
 public:
  static absl::StatusOr<GroupedGemmScratch> Create(int max_experts);
  GroupedGemmScratch(GroupedGemmScratch&& other) noexcept;
  GroupedGemmScratch& operator=(GroupedGemmScratch&& other) noexcept;
  GroupedGemmScratch(const GroupedGemmScratch&) = delete;
  GroupedGemmScratch& operator=(const GroupedGemmScratch&) = delete;
  ~GroupedGemmScratch();

  int max_experts() const { return max_experts_; }

 private:
  friend absl::Status LaunchExpertFfn(const ExpertFfnParams& p, const ExpertFfnLaunch& launch,
                                      cudaStream_t stream);
  GroupedGemmScratch() = default;
  void Reset();

  int max_experts_ = 0;
  void** host_ptrs_ = nullptr;      // pinned [6 * max_experts]
  void** device_ptrs_ = nullptr;    // device [6 * max_experts]
  cudaEvent_t uploaded_ = nullptr;  // recorded after the last upload
};

// ---------------------------------------------------- expert FFN, plan on the device
// (grouped_gemm.cu) The same FFN without reading the plan back: the row tiles are built
// on the device from expert_offsets, and our own grouped GEMM (bf16 WMMA, fp32
// accumulation) skips the tiles past their count, so a step issues its MoE layers without
// a host synchronization and can be captured. Needs every expert's weights resident,
// bf16, row-major, H and I multiples of 8 (CanImplementDevicePlan); rounds the gathered
// rows and SiLU·mul to bf16 like the cuBLAS bf16 path.
class DevicePlanScratch {
 public:
  DevicePlanScratch() = default;
  DevicePlanScratch(const DevicePlanScratch&) = delete;
  DevicePlanScratch& operator=(const DevicePlanScratch&) = delete;

  // The most row tiles a plan of `pairs` (token, slot) pairs over E experts has.
  static int MaxTiles(int64_t pairs, int num_experts);
  // Counts the reallocations (recorded graphs that used the old memory are stale).
  uint64_t generation() const { return generation_; }

 private:
  friend absl::Status LaunchExpertFfnDevicePlan(const ExpertFfnParams& p,
                                                DevicePlanScratch& scratch, cudaStream_t stream);
  // The experts' weight pointers on the device ([gate_up E][down E]), uploaded once per
  // weight array (a layer's, for resident experts) and again only when they change.
  absl::StatusOr<const void* const*> WeightTable(const ExpertFfnParams& p);
  // [2 * max_tiles + 1]: tile experts, tile first rows, the count. Grows on demand.
  absl::StatusOr<int32_t*> Tiles(int max_tiles);

  struct Table {
    std::vector<const void*> host;
    DeviceBuffer<const void*> device;
  };
  std::unordered_map<const MatrixRef*, Table> tables_;
  DeviceBuffer<int32_t> tiles_;
  int max_tiles_ = 0;
  uint64_t generation_ = 0;
};

absl::Status CanImplementDevicePlan(const ExpertFfnParams& p);
absl::Status LaunchExpertFfnDevicePlan(const ExpertFfnParams& p, DevicePlanScratch& scratch,
                                       cudaStream_t stream);

// --------------------------------------------------------------------------- combine
// kernels::CombineParams (device pointers): out[t] = sum_j w[t, j] * y[row(t, j)], j
// ascending, a multiply then an add per term as the CPU computes it.
absl::Status CanImplement(const CombineParams& p);
absl::Status LaunchCombine(const CombineParams& p, cudaStream_t stream);

// ----------------------------------------------------------------------------- linear
// A device scratch that grows on demand. Growing frees and allocates, which synchronizes
// the device, so it never grows inside a stream capture once a first run has sized it.
class DeviceScratch {
 public:
  absl::StatusOr<void*> Get(size_t bytes);
  // Counts the growths (recorded graphs that used the old memory are stale).
  uint64_t generation() const { return generation_; }

 private:
  DeviceBuffer<unsigned char> buffer_;
  uint64_t generation_ = 0;
};

// kernels::LinearParams (device pointers) with a row-major weight: fp32 through cublasSgemm
// (no TF32); bf16 through cublasGemmEx with the input rows rounded to bf16 into `scratch`
// (required for bf16) first, fp32 accumulation and output. No row indirection.
absl::Status CanImplement(const LinearParams& p);
absl::Status LaunchLinear(const LinearParams& p, cublasHandle_t cublas, cudaStream_t stream,
                          DeviceScratch* scratch = nullptr);

// ----------------------------------------------------- row-wise and element-wise ops
// (elementwise.cu) The CUDA twins of kernels/cpu/ops.h: embedding (row-major f32 or bf16
// table), RMSNorm (fp32 block reduction; row indirection, in place without it), RoPE, the
// KV write, SiLU·mul, add, clamp, the Qwen2-MoE sigmoid-gated add.
absl::Status CanImplement(const EmbeddingParams& p);
absl::Status LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream);
absl::Status CanImplement(const RmsNormParams& p);
absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);
// rotate_half RoPE (full or partial rotary), in place.
absl::Status CanImplement(const RopeParams& p);
absl::Status LaunchRope(const RopeParams& p, cudaStream_t stream);
// The KV write into one layer's paged cache; block_tables is a device array of device
// block-table pointers.
absl::Status CanImplement(const KvWriteParams& p);
absl::Status LaunchKvWrite(const KvWriteParams& p, cudaStream_t stream);
absl::Status CanImplement(const SiluMulParams& p);
absl::Status LaunchSiluMul(const SiluMulParams& p, cudaStream_t stream);
absl::Status CanImplement(const AddParams& p);
absl::Status LaunchAdd(const AddParams& p, cudaStream_t stream);
absl::Status CanImplement(const ClampParams& p);
absl::Status LaunchClamp(const ClampParams& p, cudaStream_t stream);
absl::Status CanImplement(const SigmoidGatedAddParams& p);
absl::Status LaunchSigmoidGatedAdd(const SigmoidGatedAddParams& p, cudaStream_t stream);
// One block per row: the largest value, ties to the lowest index (NaNs never win).
absl::Status CanImplement(const ArgMaxParams& p);
absl::Status LaunchArgMax(const ArgMaxParams& p, cudaStream_t stream);
// (sampling.cu) kernels::SampleParams: one block of 1024 threads per row; the cuts by
// bisection, the weights and sums in double like the CPU reference.
absl::Status CanImplement(const SampleParams& p);
absl::Status LaunchSample(const SampleParams& p, cudaStream_t stream);
// (sampling.cu) kernels::SelfContrastRowsParams: one block per pair, kernels/cpu/contrast.h's
// rule with the same float arithmetic.
absl::Status CanImplement(const SelfContrastRowsParams& p);
absl::Status LaunchSelfContrastRows(const SelfContrastRowsParams& p, cudaStream_t stream);

// --------------------------------------------------------------------------- attention
// (attention.cu) kernels::PagedAttentionParams (device pointers; block_tables a device
// array of device tables): causal GQA attention with an optional sliding window, one block
// per (token, q head), any context length. The CPU kernel's limits apply.
absl::Status CanImplement(const PagedAttentionParams& p);
absl::Status LaunchPagedAttention(const PagedAttentionParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
