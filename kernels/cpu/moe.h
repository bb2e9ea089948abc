// CPU reference kernels of the MoE layer (DESIGN.md section 3): routing (gating),
// dispatch (group the step's (token, slot) pairs by expert), the expert FFNs (one GEMM
// per expert over its contiguous rows) and the deterministic combine. These are the
// oracle of the CUDA kernels and the path CI runs. Glossary: T tokens, H hidden,
// I expert intermediate, E experts, K top-k, P = T*K (token, slot) pairs.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels {

// Routing rules of shared/specs/moe_algorithms.md section 6.
enum class RoutingRule {
  // p = softmax_fp32(logits); top-k of p; optionally w /= sum(w). Mixtral (always
  // renormalised; identical to top-k of logits then softmax over the k), Qwen2-MoE,
  // Qwen3-MoE and OLMoE (renormalised iff norm_topk_prob).
  kSoftmaxTopK,
};

struct GatingParams {
  RoutingRule rule = RoutingRule::kSoftmaxTopK;
  const float* router_logits = nullptr;  // [T, E] fp32
  int num_tokens = 0;                    // T
  int num_experts = 0;                   // E
  int top_k = 0;                         // K
  bool renormalize = false;              // divide the k weights by their sum
  // Optional per-token override, nullptr = none. 0: the model's rule. r >= 1: SCMoE
  // rank-r routing: only the expert ranked r (1-based) by probability, weight 1.0; the
  // other K-1 slots get id -1 and weight 0.
  const int32_t* weak_rank = nullptr;  // [T]
  int32_t* topk_ids = nullptr;         // [T, K] out; -1 marks an unused slot
  float* topk_weights = nullptr;       // [T, K] out; fp32
};

// Checks every limit Gating assumes (pointers set, 1 <= K <= E, E <= kMaxExperts).
absl::Status CanImplement(const GatingParams& p);
inline constexpr int kMaxExperts = 1024;
// Ties between equal probabilities go to the lower expert id. Slots are ordered by
// descending probability, as torch.topk orders them.
void Gating(const GatingParams& p);

struct DispatchParams {
  const int32_t* topk_ids = nullptr;  // [T, K]; -1 = unused slot
  int num_tokens = 0;                 // T
  int top_k = 0;                      // K
  int num_experts = 0;                // E
  int32_t* expert_offsets = nullptr;  // [E + 1] out: rows of expert e are [off[e], off[e+1])
  // [T*K] out: pair index p = t*K + j for every used slot, grouped by expert and, inside
  // an expert, ascending in p (a stable counting sort). Only the first off[E] are set.
  int32_t* sorted_pairs = nullptr;
  int32_t* pair_to_row = nullptr;  // [T*K] out: row of pair p in sorted order, -1 if unused
};

absl::Status CanImplement(const DispatchParams& p);
// Histogram per expert, exclusive scan, stable counting sort.
void Dispatch(const DispatchParams& p);

struct ExpertFfnParams {
  const float* x = nullptr;                 // [T, H] layer input (post-attention RMSNorm)
  const int32_t* sorted_pairs = nullptr;    // [P] from Dispatch
  const int32_t* expert_offsets = nullptr;  // [E + 1] from Dispatch
  int num_tokens = 0;                       // T
  int top_k = 0;                            // K
  int num_experts = 0;                      // E
  int hidden = 0;                           // H
  int inter = 0;                            // I
  // Per-expert weight pointers, so weights may live anywhere (resident or an offload
  // slot). Experts without rows are never read and may be nullptr.
  const float* const* w_gate_up = nullptr;  // [E] -> [2I, H]: rows [0, I) gate, [I, 2I) up
  const float* const* w_down = nullptr;     // [E] -> [H, I]
  float* ws_x = nullptr;                    // [P, H] workspace: gathered rows
  float* ws_gate_up = nullptr;              // [P, 2I] workspace
  float* ws_act = nullptr;                  // [P, I] workspace: silu(gate) * up
  float* y = nullptr;                       // [P, H] out: expert output per sorted row
};

absl::Status CanImplement(const ExpertFfnParams& p);
// For each expert with rows: gather its rows, one GEMM [rows, H] x [H, 2I], SwiGLU,
// one GEMM [rows, I] x [I, H]; a GEMV pair per row for experts with at most 4 rows. BLAS
// (OpenBLAS), fp32.
void ExpertFfn(const ExpertFfnParams& p);

struct CombineParams {
  const float* y = nullptr;              // [P, H] ExpertFfn output, sorted rows
  const int32_t* pair_to_row = nullptr;  // [T*K]
  const float* topk_weights = nullptr;   // [T, K]
  int num_tokens = 0;                    // T
  int top_k = 0;                         // K
  int hidden = 0;                        // H
  float* out = nullptr;                  // [T, H] out (overwritten)
};

// out[t] = sum_j w[t, j] * y[row(t, j)], j ascending, so the result for a token does not
// depend on the rest of the batch.
void Combine(const CombineParams& p);

}  // namespace moe::kernels
