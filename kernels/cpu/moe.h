// CPU kernels of the MoE layer (DESIGN.md section 3): routing (gating), dispatch (group
// the step's (token, slot) pairs by expert), the expert FFNs (one GEMM per expert over its
// rows, all experts in one parallel region) and the deterministic combine. These are the
// oracle of the CUDA kernels and the path CI runs.
#pragma once

#include "absl/status/status.h"
#include "kernels/params.h"

namespace moe::kernels::cpu {

// Checks every limit Gating assumes (pointers set, 1 <= K <= E, E <= kMaxExperts).
absl::Status CanImplement(const GatingParams& p);
void Gating(const GatingParams& p);

absl::Status CanImplement(const DispatchParams& p);
void Dispatch(const DispatchParams& p);

// Also checks that every expert with rows has kPanels16 weights of the right shape.
absl::Status CanImplement(const ExpertFfnParams& p);
// The gate/up GEMMs of every expert with rows in one parallel region (rows read from x in
// place), SwiGLU, then the down GEMMs in another. ws_x is not used.
void ExpertFfn(const ExpertFfnParams& p);

absl::Status CanImplement(const CombineParams& p);
void Combine(const CombineParams& p);

}  // namespace moe::kernels::cpu
