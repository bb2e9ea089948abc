#include "engine/self_contrast.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status SelfContrastParams::Validate(int num_routed_experts) const {
  if (num_routed_experts == 0) {
    return absl::InvalidArgumentError(
        "self_contrast cannot run on this model: it has no routed experts to contrast its "
        "routing with");
  }
  if (!(beta >= 0.f) || !std::isfinite(beta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("self_contrast.beta must be a number >= 0, got ", beta));
  }
  if (!(alpha > 0.f && alpha <= 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("self_contrast.alpha must be in (0, 1], got ", alpha));
  }
  if (weak_rank < 1 || weak_rank > num_routed_experts) {
    return absl::InvalidArgumentError(absl::StrCat("self_contrast.weak_rank must be in [1, ",
                                                   num_routed_experts,
                                                   "] (the routed experts), got ", weak_rank));
  }
  return absl::OkStatus();
}

void SelfContrastScores(std::span<const float> strong, std::span<const float> weak,
                        float temperature, const SelfContrastParams& params,
                        std::span<const int32_t> eos_ids, std::vector<float>* scores) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  const size_t vocab = strong.size();
  scores->assign(vocab, kMasked);
  if (vocab == 0) return;
  const float inv_t = temperature > 0.f ? 1.f / temperature : 1.f;
  float max_s = -std::numeric_limits<float>::infinity();
  for (float z : strong) max_s = std::max(max_s, z * inv_t);
  const float cutoff = std::log(params.alpha) + max_s;
  const float keep = 1.f + params.beta;
  for (size_t v = 0; v < vocab; ++v) {
    const float s = strong[v] * inv_t;
    if (s >= cutoff) (*scores)[v] = keep * s - params.beta * (weak[v] * inv_t);
  }
  if (!params.ban_eos) return;
  auto is_eos = [&](size_t v) {
    return std::find(eos_ids.begin(), eos_ids.end(), static_cast<int32_t>(v)) != eos_ids.end();
  };
  bool any = false;
  for (size_t v = 0; v < vocab; ++v) {
    if (is_eos(v)) {
      (*scores)[v] = kMasked;
    } else {
      any |= (*scores)[v] != kMasked;
    }
  }
  if (any) return;
  // Banning EOS removed every plausible token: the best non-EOS token of s alone.
  size_t best = vocab;
  for (size_t v = 0; v < vocab; ++v) {
    if (!is_eos(v) && (best == vocab || strong[v] > strong[best])) best = v;
  }
  if (best < vocab) (*scores)[best] = strong[best] * inv_t;
}

int32_t SelfContrastGreedy(std::span<const float> strong, std::span<const float> weak,
                           const SelfContrastParams& params, std::span<const int32_t> eos_ids) {
  std::vector<float> scores;
  SelfContrastScores(strong, weak, /*temperature=*/0.f, params, eos_ids, &scores);
  int32_t best = 0;
  for (size_t v = 1; v < scores.size(); ++v) {
    if (scores[v] > scores[best]) best = static_cast<int32_t>(v);
  }
  return best;
}

}  // namespace moe
