#include "kernels/cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace moe::kernels::cpu {

absl::Status CanImplement(const GatingParams& p) {
  if (p.router_logits == nullptr || p.topk_ids == nullptr || p.topk_weights == nullptr) {
    return absl::InvalidArgumentError("gating: null buffer");
  }
  if (p.num_tokens < 0 || p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: E=%d outside [1, %d]", p.num_experts, kMaxExperts));
  }
  if (p.top_k < 1 || p.top_k > p.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: K=%d outside [1, E=%d]", p.top_k, p.num_experts));
  }
  if (p.slots != 0 && (p.slots < p.top_k || p.slots > p.num_experts)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gating: slots=%d outside [K=%d, E=%d]", p.slots, p.top_k, p.num_experts));
  }
  const int S = p.slot_count();
  for (int t = 0; t < p.num_tokens; ++t) {
    const int rank = p.weak_rank != nullptr ? p.weak_rank[t] : 0;
    const int n = p.route_top_k != nullptr ? p.route_top_k[t] : 0;
    const float top_p = p.route_top_p != nullptr ? p.route_top_p[t] : 0.f;
    if (rank < 0 || n < 0 || n > S || !(top_p >= 0.f && top_p <= 1.f) ||
        (rank == 0 && n == 0 && top_p > 0.f && S < p.num_experts)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "gating: token %d's routing (weak_rank %d, top_k %d, top_p %g) does not fit E=%d, "
          "slots=%d",
          t, rank, n, top_p, p.num_experts, S));
    }
  }
  return absl::OkStatus();
}

void Gating(const GatingParams& p) {
  const int E = p.num_experts;
  const int K = p.top_k;
  const int S = p.slot_count();
  std::vector<float> prob(E);
  std::vector<int32_t> order(E);
  for (int t = 0; t < p.num_tokens; ++t) {
    const float* z = p.router_logits + static_cast<size_t>(t) * E;
    // softmax in fp32, as torch.softmax(dtype=float32): subtract the max, exp, divide.
    float zmax = z[0];
    for (int e = 1; e < E; ++e) zmax = std::max(zmax, z[e]);
    float sum = 0.f;
    for (int e = 0; e < E; ++e) {
      prob[e] = std::exp(z[e] - zmax);
      sum += prob[e];
    }
    for (int e = 0; e < E; ++e) prob[e] /= sum;

    // A rank past E means the last (the CUDA kernel clamps the same way).
    const int rank = p.weak_rank != nullptr ? std::min(p.weak_rank[t], E) : 0;
    const int top_k = rank > 0 || p.route_top_k == nullptr ? 0 : p.route_top_k[t];
    const float top_p = rank > 0 || top_k > 0 || p.route_top_p == nullptr ? 0.f : p.route_top_p[t];
    const int needed = rank > 0 ? rank : top_k > 0 ? top_k : top_p > 0.f ? E : K;
    // Partial sort by descending probability; equal probabilities keep the lower id first.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(
        order.begin(), order.begin() + needed, order.end(),
        [&](int32_t a, int32_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
    int32_t* ids = p.topk_ids + static_cast<size_t>(t) * S;
    float* w = p.topk_weights + static_cast<size_t>(t) * S;
    std::fill(ids, ids + S, -1);
    std::fill(w, w + S, 0.f);
    if (rank > 0) {
      // SCMoE rank-r weak routing: one expert; renormalized over itself its weight is 1.
      ids[0] = order[rank - 1];
      w[0] = p.renormalize ? 1.f : prob[order[rank - 1]];
      continue;
    }
    int count = needed;
    bool renormalize = p.renormalize;
    if (top_p > 0.f) {
      // The first rank whose cumulative mass exceeds P, strictly; none: every expert.
      float mass = 0.f;
      count = E;
      for (int j = 0; j < E; ++j) {
        mass += prob[order[j]];
        if (mass > top_p) {
          count = j + 1;
          break;
        }
      }
      renormalize = false;
    }
    float wsum = 0.f;
    for (int j = 0; j < count; ++j) {
      ids[j] = order[j];
      w[j] = prob[order[j]];
      wsum += w[j];
    }
    if (renormalize) {
      for (int j = 0; j < count; ++j) w[j] /= wsum;
    }
  }
}

absl::Status CanImplement(const DispatchParams& p) {
  if (p.topk_ids == nullptr || p.expert_offsets == nullptr || p.sorted_pairs == nullptr ||
      p.pair_to_row == nullptr) {
    return absl::InvalidArgumentError("dispatch: null buffer");
  }
  if (p.num_tokens < 0 || p.top_k < 1 || p.num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("dispatch: bad shape T=%d K=%d E=%d",
                                                      p.num_tokens, p.top_k, p.num_experts));
  }
  const int64_t pairs = static_cast<int64_t>(p.num_tokens) * p.top_k;
  if (pairs > INT32_MAX) return absl::InvalidArgumentError("dispatch: T*K overflows int32");
  return absl::OkStatus();
}

void Dispatch(const DispatchParams& p) {
  const int E = p.num_experts;
  const int P = p.num_tokens * p.top_k;
  // 1. histogram
  std::vector<int32_t> count(E, 0);
  for (int i = 0; i < P; ++i) {
    const int32_t e = p.topk_ids[i];
    if (e >= 0 && e < E) ++count[e];
  }
  // 2. exclusive scan
  p.expert_offsets[0] = 0;
  for (int e = 0; e < E; ++e) p.expert_offsets[e + 1] = p.expert_offsets[e] + count[e];
  // 3. stable counting sort: pairs visited in ascending index, so each expert's rows stay
  // in token order.
  std::vector<int32_t> cursor(p.expert_offsets, p.expert_offsets + E);
  for (int i = 0; i < P; ++i) {
    const int32_t e = p.topk_ids[i];
    if (e >= 0 && e < E) {
      const int32_t row = cursor[e]++;
      p.sorted_pairs[row] = i;
      p.pair_to_row[i] = row;
    } else {
      p.pair_to_row[i] = -1;
    }
  }
}

absl::Status CanImplement(const ExpertFfnParams& p) {
  if (p.x == nullptr || p.sorted_pairs == nullptr || p.expert_offsets == nullptr ||
      p.w_gate_up == nullptr || p.w_down == nullptr || p.ws_gate_up == nullptr ||
      p.ws_act == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("expert_ffn: null buffer");
  }
  if (p.hidden < 1 || p.inter < 1 || p.top_k < 1 || p.num_experts < 1 || p.num_tokens < 0) {
    return absl::InvalidArgumentError("expert_ffn: bad shape");
  }
  for (int e = 0; e < p.num_experts; ++e) {
    if (p.expert_offsets[e + 1] == p.expert_offsets[e]) continue;
    const MatrixRef& gu = p.w_gate_up[e];
    const MatrixRef& dn = p.w_down[e];
    if (gu.data == nullptr || dn.data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d has rows but no weights", e));
    }
    if (gu.layout != WeightLayout::kPanels16 || dn.layout != WeightLayout::kPanels16 ||
        gu.rows != 2 * p.inter || gu.cols != p.hidden || dn.rows != p.hidden ||
        dn.cols != p.inter) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "expert_ffn: expert %d's weights are not kPanels16 [2I=%d, H=%d] and [H, I]", e,
          2 * p.inter, p.hidden));
    }
  }
  return absl::OkStatus();
}

void ExpertFfn(const ExpertFfnParams& p) {
  const int H = p.hidden;
  const int I = p.inter;
  const int P = p.expert_offsets[p.num_experts];
  std::vector<int32_t> token_of_row(P);
  for (int r = 0; r < P; ++r) token_of_row[r] = p.sorted_pairs[r] / p.top_k;
  std::vector<LinearParams> gate_up, down;
  for (int e = 0; e < p.num_experts; ++e) {
    const int begin = p.expert_offsets[e];
    const int rows = p.expert_offsets[e + 1] - begin;
    if (rows == 0) continue;  // empty experts cost nothing and are never read
    LinearParams g;
    g.x = p.x;
    g.ldx = H;
    g.x_rows = token_of_row.data() + begin;
    g.m = rows;
    g.w = p.w_gate_up[e];
    g.y = p.ws_gate_up + static_cast<int64_t>(begin) * 2 * I;
    g.ldy = 2 * I;
    gate_up.push_back(g);
    LinearParams d;
    d.x = p.ws_act + static_cast<int64_t>(begin) * I;
    d.ldx = I;
    d.m = rows;
    d.w = p.w_down[e];
    d.y = p.y + static_cast<int64_t>(begin) * H;
    d.ldy = H;
    down.push_back(d);
  }
  LinearBatch(gate_up);
  SiluMulParams s;
  s.gate_up = p.ws_gate_up;
  s.rows = P;
  s.inter = I;
  s.out = p.ws_act;
  SiluMul(s);
  LinearBatch(down);
}

absl::Status CanImplement(const CombineParams& p) {
  if (p.num_tokens < 0 || p.top_k < 1 || p.hidden < 1) {
    return absl::InvalidArgumentError("combine: bad shape");
  }
  if (p.num_tokens > 0 && (p.y == nullptr || p.pair_to_row == nullptr ||
                           p.topk_weights == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError("combine: null buffer");
  }
  return absl::OkStatus();
}

void Combine(const CombineParams& p) {
  const IsaKernels& k = Kernels();
  ParallelFor(p.num_tokens, std::max(1, 8192 / (p.hidden * p.top_k)), [&](int64_t t0, int64_t t1) {
    k.combine_rows(p, static_cast<int>(t0), static_cast<int>(t1));
  });
}

}  // namespace moe::kernels::cpu
