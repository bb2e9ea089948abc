// CUDA kernels of the MoE layer (DESIGN.md section 3): routing (gating), dispatch, the
// expert FFNs and the combine. Same semantics as the CPU reference in kernels/cpu/moe.h,
// which is their oracle (tests/gpu/moe_cuda_test.cc). Every pointer in a Cuda*Params is
// device memory unless its comment says host. Each launcher checks CanImplement(params)
// on the host, enqueues on `stream` and returns the launch status; results are ready
// when the stream is. Glossary: T tokens, H hidden, I expert intermediate, E experts,
// K top-k, P = T*K (token, slot) pairs.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu/moe.h"

namespace moe::kernels::cuda {

// The CPU reference's limit: one warp walks all E probabilities of a token.
inline constexpr int kMaxExperts = ::moe::kernels::kMaxExperts;

// ---------------------------------------------------------------------------- gating
// Semantics of kernels::GatingParams: p = softmax_fp32(logits); the K largest p in
// descending order, ties to the lower expert id; optional renormalisation. weak_rank[t]
// = r >= 1 selects only the expert ranked r (1-based) with weight 1.0 and marks the other
// K-1 slots id -1, weight 0. One warp per token.
struct CudaGatingParams {
  RoutingRule rule = RoutingRule::kSoftmaxTopK;
  const float* router_logits = nullptr;  // [T, E] fp32
  int num_tokens = 0;                    // T
  int num_experts = 0;                   // E
  int top_k = 0;                         // K
  bool renormalize = false;              // divide the k weights by their sum
  const int32_t* weak_rank = nullptr;    // [T] optional; 0 = model rule, r >= 1 = rank r
  int32_t* topk_ids = nullptr;           // [T, K] out; -1 marks an unused slot
  float* topk_weights = nullptr;         // [T, K] out; fp32
};

absl::Status CanImplement(const CudaGatingParams& p);
absl::Status LaunchGating(const CudaGatingParams& p, cudaStream_t stream);

// -------------------------------------------------------------------------- dispatch
// Semantics of kernels::DispatchParams: histogram per expert, exclusive scan, stable
// counting sort of the P = T*K pairs by expert (ascending pair index inside an expert;
// the placement is a deterministic ranked scan, never the order of atomics), so the
// arrays are bit-identical to the CPU reference. One thread block.
struct CudaDispatchParams {
  const int32_t* topk_ids = nullptr;  // [T, K]; -1 = unused slot
  int num_tokens = 0;                 // T
  int top_k = 0;                      // K
  int num_experts = 0;                // E
  int32_t* expert_offsets = nullptr;  // [E + 1] out
  int32_t* sorted_pairs = nullptr;    // [T*K] out; only the first expert_offsets[E] are set
  int32_t* pair_to_row = nullptr;     // [T*K] out; -1 for an unused slot
};

absl::Status CanImplement(const CudaDispatchParams& p);
absl::Status LaunchDispatch(const CudaDispatchParams& p, cudaStream_t stream);

// ------------------------------------------------------------------------ expert FFN
// How the per-expert GEMMs are issued. kGrouped: one cublasSgemmGroupedBatched launch per
// GEMM over the experts with rows (DESIGN.md section 3); needs a GroupedGemmScratch.
// kLoop: one cublasSgemm per expert with rows, all on `stream` (the fallback).
enum class FfnGemmPath { kGrouped, kLoop };

class GroupedGemmScratch;

// Semantics of kernels::ExpertFfnParams: for each expert e with rows [off[e], off[e+1]):
// gather x rows, G = X W_gate_up[e]^T ([rows, 2I]), A = silu(G[:, :I]) * G[:, I:],
// Y = A W_down[e]^T ([rows, H]). fp32 throughout (cuBLAS math mode without TF32).
struct CudaExpertFfnParams {
  const float* x = nullptr;                 // [T, H] layer input
  const int32_t* sorted_pairs = nullptr;    // [P] from LaunchDispatch
  const int32_t* expert_offsets = nullptr;  // [E + 1] from LaunchDispatch
  // Host copy of expert_offsets (the plan is read back once per layer; DESIGN.md section
  // 3): cuBLAS takes GEMM shapes on the host. Must equal the device array.
  const int32_t* expert_offsets_host = nullptr;  // [E + 1] host
  int num_tokens = 0;                            // T
  int top_k = 0;                                 // K
  int num_experts = 0;                           // E
  int hidden = 0;                                // H
  int inter = 0;                                 // I
  // Host arrays of device pointers, one per expert; experts without rows are never read
  // and may be nullptr.
  const float* const* w_gate_up = nullptr;  // host [E] -> device [2I, H]: gate rows, then up
  const float* const* w_down = nullptr;     // host [E] -> device [H, I]
  float* ws_x = nullptr;                    // [P, H] workspace: gathered rows
  float* ws_gate_up = nullptr;              // [P, 2I] workspace
  float* ws_act = nullptr;                  // [P, I] workspace
  float* y = nullptr;                       // [P, H] out: expert output per sorted row
  FfnGemmPath gemm_path = FfnGemmPath::kLoop;
  cublasHandle_t cublas = nullptr;                // its stream is set to `stream` by the launcher
  GroupedGemmScratch* grouped_scratch = nullptr;  // required for kGrouped
};

absl::Status CanImplement(const CudaExpertFfnParams& p);
absl::Status LaunchExpertFfn(const CudaExpertFfnParams& p, cudaStream_t stream);

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
  friend absl::Status LaunchExpertFfn(const CudaExpertFfnParams& p, cudaStream_t stream);
  GroupedGemmScratch() = default;
  void Reset();

  int max_experts_ = 0;
  void** host_ptrs_ = nullptr;      // pinned [6 * max_experts]
  void** device_ptrs_ = nullptr;    // device [6 * max_experts]
  cudaEvent_t uploaded_ = nullptr;  // recorded after the last upload
};

// --------------------------------------------------------------------------- combine
// Semantics of kernels::CombineParams: out[t] = sum_j w[t, j] * y[row(t, j)], j ascending.
struct CudaCombineParams {
  const float* y = nullptr;              // [P, H] sorted rows
  const int32_t* pair_to_row = nullptr;  // [T*K]
  const float* topk_weights = nullptr;   // [T, K]
  int num_tokens = 0;                    // T
  int top_k = 0;                         // K
  int hidden = 0;                        // H
  float* out = nullptr;                  // [T, H] out (overwritten)
};

absl::Status CanImplement(const CudaCombineParams& p);
absl::Status LaunchCombine(const CudaCombineParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
