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
  // The most (token, expert) pairs the step can use (the sum of each token's largest
  // count); sizes the expert scratch when the plan is not read back. 0: T * slots.
  int64_t max_pairs = 0;
};

// Where IssueMoeLayer copies the layer's plan, for the counts: host memory the backend
// copies into in order with its ops (pinned on a device backend).
struct MoePlanCopy {
  int32_t* offsets = nullptr;  // [E + 1]
  int32_t* ids = nullptr;      // [T * slots], copied when the step overrides routing
};

// out[T, H] = MoE(x[T, H]), issued on the backend. routing: the step's per-token
// overrides, or nullptr. The plan is copied into `plan` without waiting, except where the
// backend computes in host memory or the expert source reads the plan (then it waits for
// it, and sizes the expert scratch by the rows actually routed). `ws` holds the layer's
// scratch between calls.
absl::Status IssueMoeLayer(Backend& backend, const MoeLayerSpec& spec, ExpertSource& experts,
                           int layer, const float* x, int num_tokens, const TokenRouting* routing,
                           Workspace& ws, float* out, const MoePlanCopy& plan);

// The counts of a plan IssueMoeLayer copied, once the backend has synchronized:
// expert_tokens (host [E], or nullptr) gets the tokens routed to each expert;
// experts_per_token (host [E + 1], or nullptr) gains 1 at entry n for each token that used
// n experts.
void CountMoePlan(const MoeLayerSpec& spec, int num_tokens, const TokenRouting* routing,
                  const MoePlanCopy& plan, int32_t* expert_tokens, int64_t* experts_per_token);

// IssueMoeLayer, Synchronize, CountMoePlan: the layer on its own (benchmarks, tests).
absl::Status RunMoeLayer(Backend& backend, const MoeLayerSpec& spec, ExpertSource& experts,
                         int layer, const float* x, int num_tokens, const TokenRouting* routing,
                         Workspace& ws, float* out, int32_t* expert_tokens,
                         int64_t* experts_per_token = nullptr);

}  // namespace moe
