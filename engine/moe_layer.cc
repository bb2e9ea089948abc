#include "engine/moe_layer.h"

#include <algorithm>
#include <span>
#include <vector>

#include "base/status_macros.h"

namespace moe {
namespace {

enum Slot {
  kRouterLogits,
  kTopkIds,
  kTopkWeights,
  kOffsets,
  kSortedPairs,
  kPairToRow,
  kGatheredX,
  kGateUp,
  kAct,
  kExpertY,
  kSharedGateUp,
  kSharedAct,
  kSharedOut,
  kSharedGateLogit,
};

}  // namespace

namespace {

// The slots per token: the model's top-k, or more for overrides.
int SlotsOf(const MoeLayerSpec& spec, const TokenRouting* routing) {
  return routing != nullptr && routing->slots > 0 ? routing->slots : spec.top_k;
}

}  // namespace

absl::Status IssueMoeLayer(Backend& backend, const MoeLayerSpec& spec, ExpertSource& experts,
                           int layer, const float* x, int num_tokens, const TokenRouting* routing,
                           Workspace& ws, float* out, const MoePlanCopy& plan) {
  const int T = num_tokens, H = spec.hidden, E = spec.num_experts;
  // K from here on is the slots per token: the model's top-k, or more for overrides.
  const int K = SlotsOf(spec, routing);
  const int I = spec.inter;
  const size_t P = static_cast<size_t>(T) * K;
  if (T == 0) return absl::OkStatus();

  MOE_ASSIGN_OR_RETURN(float* logits, ws.Get<float>(kRouterLogits, static_cast<size_t>(T) * E));
  kernels::LinearParams router;
  router.x = x;
  router.ldx = H;
  router.m = T;
  router.w = spec.router;
  router.y = logits;
  router.ldy = E;
  MOE_RETURN_IF_ERROR(backend.Linear(router));

  MOE_ASSIGN_OR_RETURN(int32_t * ids, ws.Get<int32_t>(kTopkIds, P));
  MOE_ASSIGN_OR_RETURN(float* weights, ws.Get<float>(kTopkWeights, P));
  kernels::GatingParams gp;
  gp.router_logits = logits;
  gp.num_tokens = T;
  gp.num_experts = E;
  gp.top_k = spec.top_k;
  gp.slots = K;
  gp.renormalize = spec.renormalize;
  if (routing != nullptr) {
    gp.weak_rank = routing->weak_rank;
    gp.route_top_k = routing->top_k;
    gp.route_top_p = routing->top_p;
  }
  gp.topk_ids = ids;
  gp.topk_weights = weights;
  MOE_RETURN_IF_ERROR(backend.Gating(gp));

  MOE_ASSIGN_OR_RETURN(int32_t * offsets, ws.Get<int32_t>(kOffsets, E + 1));
  MOE_ASSIGN_OR_RETURN(int32_t * sorted, ws.Get<int32_t>(kSortedPairs, P));
  MOE_ASSIGN_OR_RETURN(int32_t * pair_to_row, ws.Get<int32_t>(kPairToRow, P));
  kernels::DispatchParams dp;
  dp.topk_ids = ids;
  dp.num_tokens = T;
  dp.top_k = K;
  dp.num_experts = E;
  dp.expert_offsets = offsets;
  dp.sorted_pairs = sorted;
  dp.pair_to_row = pair_to_row;
  MOE_RETURN_IF_ERROR(backend.Dispatch(dp));

  // The plan, for the counts and for an expert source that reads it. Where neither the
  // backend (host memory) nor the source needs it now, nothing waits for it: the expert
  // scratch is sized by the most pairs the step can route instead of the pairs it did.
  MOE_RETURN_IF_ERROR(backend.CopyToHostAsync(plan.offsets, offsets, sizeof(int32_t) * (E + 1)));
  if (routing != nullptr) {
    MOE_RETURN_IF_ERROR(backend.CopyToHostAsync(plan.ids, ids, sizeof(int32_t) * P));
  }
  size_t rows = P;
  if (routing != nullptr && routing->max_pairs > 0) {
    rows = std::min(rows, static_cast<size_t>(routing->max_pairs));
  }
  if (backend.compute_memory() != MemoryKind::kDevice || experts.needs_host_plan()) {
    MOE_RETURN_IF_ERROR(backend.Synchronize());
    rows = static_cast<size_t>(plan.offsets[E]);
  }
  rows = std::max<size_t>(rows, 1);
  MOE_ASSIGN_OR_RETURN(ExpertWeights ew,
                       experts.Acquire(layer, std::span<const int32_t>(plan.offsets, E + 1)));
  MOE_ASSIGN_OR_RETURN(float* gathered, ws.Get<float>(kGatheredX, rows * H));
  MOE_ASSIGN_OR_RETURN(float* gate_up, ws.Get<float>(kGateUp, rows * 2 * I));
  MOE_ASSIGN_OR_RETURN(float* act, ws.Get<float>(kAct, rows * I));
  MOE_ASSIGN_OR_RETURN(float* expert_y, ws.Get<float>(kExpertY, rows * H));
  kernels::ExpertFfnParams ep;
  ep.x = x;
  ep.sorted_pairs = sorted;
  ep.expert_offsets = offsets;
  ep.num_tokens = T;
  ep.top_k = K;
  ep.num_experts = E;
  ep.hidden = H;
  ep.inter = I;
  ep.w_gate_up = ew.gate_up.data();
  ep.w_down = ew.down.data();
  ep.ws_x = gathered;
  ep.ws_gate_up = gate_up;
  ep.ws_act = act;
  ep.y = expert_y;
  const absl::Status ffn = backend.ExpertFfn(ep);
  experts.Release(layer);
  MOE_RETURN_IF_ERROR(ffn);

  kernels::CombineParams cp;
  cp.y = expert_y;
  cp.pair_to_row = pair_to_row;
  cp.topk_weights = weights;
  cp.num_tokens = T;
  cp.top_k = K;
  cp.hidden = H;
  cp.out = out;
  MOE_RETURN_IF_ERROR(backend.Combine(cp));

  if (spec.shared_inter > 0) {
    const int Is = spec.shared_inter;
    MOE_ASSIGN_OR_RETURN(float* s_gu,
                         ws.Get<float>(kSharedGateUp, static_cast<size_t>(T) * 2 * Is));
    MOE_ASSIGN_OR_RETURN(float* s_act, ws.Get<float>(kSharedAct, static_cast<size_t>(T) * Is));
    MOE_ASSIGN_OR_RETURN(float* s_out, ws.Get<float>(kSharedOut, static_cast<size_t>(T) * H));
    MOE_ASSIGN_OR_RETURN(float* s_gate, ws.Get<float>(kSharedGateLogit, T));
    kernels::LinearParams proj[2];
    proj[0].x = x;
    proj[0].ldx = H;
    proj[0].m = T;
    proj[0].w = spec.shared_gate_up;
    proj[0].y = s_gu;
    proj[0].ldy = 2 * Is;
    proj[1] = proj[0];
    proj[1].w = spec.shared_gate;
    proj[1].y = s_gate;
    proj[1].ldy = 1;
    MOE_RETURN_IF_ERROR(backend.LinearBatch(proj));
    MOE_RETURN_IF_ERROR(backend.SiluMul({s_gu, T, Is, s_act}));
    kernels::LinearParams down;
    down.x = s_act;
    down.ldx = Is;
    down.m = T;
    down.w = spec.shared_down;
    down.y = s_out;
    down.ldy = H;
    MOE_RETURN_IF_ERROR(backend.Linear(down));
    MOE_RETURN_IF_ERROR(backend.SigmoidGatedAdd({out, s_out, s_gate, T, H}));
  }
  return absl::OkStatus();
}

void CountMoePlan(const MoeLayerSpec& spec, int num_tokens, const TokenRouting* routing,
                  const MoePlanCopy& plan, int32_t* expert_tokens, int64_t* experts_per_token) {
  const int T = num_tokens, E = spec.num_experts, K = SlotsOf(spec, routing);
  if (T == 0) return;
  if (expert_tokens != nullptr) {
    for (int e = 0; e < E; ++e) expert_tokens[e] = plan.offsets[e + 1] - plan.offsets[e];
  }
  if (experts_per_token == nullptr) return;
  if (routing == nullptr) {
    experts_per_token[spec.top_k] += T;
    return;
  }
  // Overrides vary the count per token: the copied ids (-1 marks an unused slot).
  for (int t = 0; t < T; ++t) {
    int used = 0;
    for (int j = 0; j < K; ++j) used += plan.ids[static_cast<size_t>(t) * K + j] >= 0;
    ++experts_per_token[used];
  }
}

absl::Status RunMoeLayer(Backend& backend, const MoeLayerSpec& spec, ExpertSource& experts,
                         int layer, const float* x, int num_tokens, const TokenRouting* routing,
                         Workspace& ws, float* out, int32_t* expert_tokens,
                         int64_t* experts_per_token) {
  const size_t pairs = static_cast<size_t>(num_tokens) * SlotsOf(spec, routing);
  const size_t ints = spec.num_experts + 1 + (routing != nullptr ? pairs : 0);
  MOE_ASSIGN_OR_RETURN(Buffer copy, backend.Allocate(MemoryKind::kPinnedHost, ints * 4));
  MoePlanCopy plan;
  plan.offsets = copy.as<int32_t>();
  if (routing != nullptr) plan.ids = plan.offsets + spec.num_experts + 1;
  MOE_RETURN_IF_ERROR(
      IssueMoeLayer(backend, spec, experts, layer, x, num_tokens, routing, ws, out, plan));
  MOE_RETURN_IF_ERROR(backend.Synchronize());
  CountMoePlan(spec, num_tokens, routing, plan, expert_tokens, experts_per_token);
  return absl::OkStatus();
}

}  // namespace moe
