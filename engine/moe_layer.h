// The MoE layer (DESIGN.md section 3), written once over the Backend and used by the
// model, the layer benchmark and the tests: router GEMM, gating (with the per-token SCMoE
// rank override), dispatch, the experts through an ExpertSource, the combine, and the
// Qwen2-MoE sigmoid-gated shared expert.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "engine/backend.h"
#include "engine/expert_source.h"
#include "engine/workspace.h"
#include "kernels/params.h"

namespace moe {

struct MoeLayerSpec {
  int hidden = 0;       // H
  int inter = 0;        // I of a routed expert
  int num_experts = 0;  // E
  int top_k = 0;        // K
  bool renormalize = false;
  kernels::MatrixRef router;  // [E, H]
  // Qwen2-MoE: out += sigmoid(x W_gate^T) * SwiGLU_shared(x); shared_inter == 0: none.
  int shared_inter = 0;               // Is
  kernels::MatrixRef shared_gate_up;  // [2Is, H]
  kernels::MatrixRef shared_down;     // [H, Is]
  kernels::MatrixRef shared_gate;     // [1, H]
};

// Per-token routing overrides of one step, as GatingParams takes them: arrays [T] in
// compute memory, or nullptr; `slots` (0: the model's K) is at least every token's count.
struct TokenRouting {
  const int32_t* weak_rank = nullptr;
  const int32_t* top_k = nullptr;
  const float* top_p = nullptr;
  int slots = 0;
};

// out[T, H] = MoE(x[T, H]). routing: the step's per-token overrides, or nullptr.
// expert_tokens (host [E], or nullptr): tokens routed to each expert. experts_per_token
// (host [E + 1], or nullptr): adds 1 to entry n for each token that used n experts.
// `ws` holds the layer's scratch between calls.
absl::Status RunMoeLayer(Backend& backend, const MoeLayerSpec& spec, ExpertSource& experts,
                         int layer, const float* x, int num_tokens, const TokenRouting* routing,
                         Workspace& ws, float* out, int32_t* expert_tokens,
                         int64_t* experts_per_token = nullptr);

}  // namespace moe
