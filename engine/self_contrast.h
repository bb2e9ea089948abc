// SCMoE self-contrast decoding's logit combination (specs/moe_algorithms.md section 1.2;
// issue 11): one row of strong-pass and weak-pass logits becomes one row of scores, from
// which the next token is the argmax (greedy) or a draw from their softmax. The strong
// and weak forward passes, and the pair of sequences behind them, are the scheduler's;
// this is only the rule, exactly.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace moe {

struct SelfContrastParams {
  float alpha = 0.1f;    // plausibility: keep tokens with p_s >= alpha * max p_s; (0, 1]
  float beta = 0.5f;     // contrast strength; >= 0 (0: plain strong-pass decoding)
  int weak_rank = 2;     // 1-based rank of the one expert the weak pass routes to
  bool ban_eos = false;  // the reference code's default (it bans EOS unless --early_stop)

  // InvalidArgument naming the field: beta < 0, alpha outside (0, 1], weak_rank outside
  // [1, num_routed_experts]; NaN is refused. A model without routed experts (0) refuses
  // self_contrast altogether.
  absl::Status Validate(int num_routed_experts) const;
};

// Fills `scores` (resized to V) from the strong and weak logits of one position:
//   s = strong / T, w = weak / T (T <= 0, greedy, scales by 1); cutoff = ln(alpha) +
//   max(s); score = (1 + beta) s - beta w where s >= cutoff (a token at the cutoff is
//   kept), -inf elsewhere; with ban_eos, every id of `eos_ids` is -inf too, and if that
//   leaves no candidate, the best non-EOS token of s is the only one (its score s).
// A row always has at least one finite score while V has a token that is not EOS.
void SelfContrastScores(std::span<const float> strong, std::span<const float> weak,
                        float temperature, const SelfContrastParams& params,
                        std::span<const int32_t> eos_ids, std::vector<float>* scores);

// The greedy choice: the argmax of the scores, the lowest id among equal maxima.
int32_t SelfContrastGreedy(std::span<const float> strong, std::span<const float> weak,
                           const SelfContrastParams& params, std::span<const int32_t> eos_ids);

}  // namespace moe
