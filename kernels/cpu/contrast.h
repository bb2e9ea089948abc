// SCMoE self-contrast's combination of one strong row and one weak row of logits, in place
// (specs/moe_algorithms.md section 1.2; engine/self_contrast.h states the rule): one
// definition for the engine's SelfContrastScores and the CPU reference of the
// backend op (kernels::SelfContrastRowsParams), which the CUDA kernel is tested against.
#pragma once

#include <cstdint>
#include <limits>

namespace moe::kernels::cpu {

// row[v] (strong logits in, scores out) = (1 + beta) s - beta w where s = row[v] * inv_t
// >= ln(alpha) + max(s), w = weak[v] * inv_t; -inf elsewhere; with ban_eos the ids of
// eos[0, num_eos) are -inf, and if nothing else is left the best non-EOS token of s (the
// lowest id among equal maxima) keeps its s.
inline void ContrastRow(float* row, const float* weak, int64_t n, float inv_t, float log_alpha,
                        float beta, bool ban_eos, const int32_t* eos, int num_eos) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  if (n == 0) return;
  auto is_eos = [&](int64_t v) {
    for (int i = 0; i < num_eos; ++i) {
      if (eos[i] == v) return true;
    }
    return false;
  };
  float max_s = kMasked;
  int64_t best = -1;  // the best non-EOS token of s, for the fallback
  for (int64_t v = 0; v < n; ++v) {
    const float s = row[v] * inv_t;
    if (s > max_s) max_s = s;
    if (ban_eos && !is_eos(v) && (best < 0 || row[v] > row[best])) best = v;
  }
  const float best_s = best >= 0 ? row[best] * inv_t : kMasked;
  const float cutoff = log_alpha + max_s;
  const float keep = 1.f + beta;
  bool any = false;
  for (int64_t v = 0; v < n; ++v) {
    const float s = row[v] * inv_t;
    float score = s >= cutoff ? keep * s - beta * (weak[v] * inv_t) : kMasked;
    if (ban_eos && is_eos(v)) score = kMasked;
    any = any || (ban_eos && score != kMasked);
    row[v] = score;
  }
  if (ban_eos && !any && best >= 0) row[best] = best_s;
}

}  // namespace moe::kernels::cpu
