#include "kernels/cpu/moe.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/ops.h"

namespace moe::kernels {
namespace {

// Experts with at most this many rows run one GEMV pair per row instead of two GEMMs:
// OpenBLAS 0.3.21's sgemm packs the weight panel before it multiplies, which costs more
// than reading the weights again for up to 4 rows (bench/RESULTS.md: at 8 rows the GEMVs
// lose 40% on the OLMoE shape).
constexpr int kMaxGemvRows = 4;

}  // namespace

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
  return absl::OkStatus();
}

void Gating(const GatingParams& p) {
  const int E = p.num_experts;
  const int K = p.top_k;
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

    const int rank = p.weak_rank != nullptr ? p.weak_rank[t] : 0;
    const int needed = rank > 0 ? std::min(rank, E) : K;
    // Partial sort by descending probability; equal probabilities keep the lower id first.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(
        order.begin(), order.begin() + needed, order.end(),
        [&](int32_t a, int32_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
    int32_t* ids = p.topk_ids + static_cast<size_t>(t) * K;
    float* w = p.topk_weights + static_cast<size_t>(t) * K;
    if (rank > 0) {
      // SCMoE rank-r weak routing: one expert, weight 1.0 after renormalisation.
      ids[0] = order[needed - 1];
      w[0] = 1.f;
      for (int j = 1; j < K; ++j) {
        ids[j] = -1;
        w[j] = 0.f;
      }
      continue;
    }
    float wsum = 0.f;
    for (int j = 0; j < K; ++j) {
      ids[j] = order[j];
      w[j] = prob[order[j]];
      wsum += w[j];
    }
    if (p.renormalize) {
      for (int j = 0; j < K; ++j) w[j] /= wsum;
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
      p.w_gate_up == nullptr || p.w_down == nullptr || p.ws_x == nullptr ||
      p.ws_gate_up == nullptr || p.ws_act == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("expert_ffn: null buffer");
  }
  if (p.hidden < 1 || p.inter < 1 || p.top_k < 1 || p.num_experts < 1 || p.num_tokens < 0) {
    return absl::InvalidArgumentError("expert_ffn: bad shape");
  }
  for (int e = 0; e < p.num_experts; ++e) {
    if (p.expert_offsets[e + 1] > p.expert_offsets[e] &&
        (p.w_gate_up[e] == nullptr || p.w_down[e] == nullptr)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d has rows but no weights", e));
    }
  }
  return absl::OkStatus();
}

void ExpertFfn(const ExpertFfnParams& p) {
  const int H = p.hidden;
  const int I = p.inter;
  for (int e = 0; e < p.num_experts; ++e) {
    const int begin = p.expert_offsets[e];
    const int rows = p.expert_offsets[e + 1] - begin;
    if (rows == 0) continue;  // empty experts cost nothing and are never read
    float* xs = p.ws_x + static_cast<size_t>(begin) * H;
    for (int r = 0; r < rows; ++r) {
      const int token = p.sorted_pairs[begin + r] / p.top_k;
      std::memcpy(xs + static_cast<size_t>(r) * H, p.x + static_cast<size_t>(token) * H,
                  sizeof(float) * H);
    }
    float* gu = p.ws_gate_up + static_cast<size_t>(begin) * 2 * I;
    float* act = p.ws_act + static_cast<size_t>(begin) * I;
    float* y = p.y + static_cast<size_t>(begin) * H;
    if (rows <= kMaxGemvRows) {
      for (int r = 0; r < rows; ++r) {
        float* gu_r = gu + static_cast<size_t>(r) * 2 * I;
        float* act_r = act + static_cast<size_t>(r) * I;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, 2 * I, H, 1.f, p.w_gate_up[e], H,
                    xs + static_cast<size_t>(r) * H, 1, 0.f, gu_r, 1);
        SiluMul(gu_r, 1, I, act_r);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, H, I, 1.f, p.w_down[e], I, act_r, 1, 0.f,
                    y + static_cast<size_t>(r) * H, 1);
      }
      continue;
    }
    // gu[rows, 2I] = xs[rows, H] * W_gate_up[2I, H]^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, 2 * I, H, 1.f, xs, H, p.w_gate_up[e],
                H, 0.f, gu, 2 * I);
    SiluMul(gu, rows, I, act);
    // y[rows, H] = act[rows, I] * W_down[H, I]^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, H, I, 1.f, act, I, p.w_down[e], I,
                0.f, y, H);
  }
}

void Combine(const CombineParams& p) {
  const int H = p.hidden;
  for (int t = 0; t < p.num_tokens; ++t) {
    float* o = p.out + static_cast<size_t>(t) * H;
    std::fill(o, o + H, 0.f);
    for (int j = 0; j < p.top_k; ++j) {
      const int32_t row = p.pair_to_row[t * p.top_k + j];
      if (row < 0) continue;
      const float w = p.topk_weights[t * p.top_k + j];
      const float* y = p.y + static_cast<size_t>(row) * H;
      for (int h = 0; h < H; ++h) o[h] += w * y[h];
    }
  }
}

}  // namespace moe::kernels
