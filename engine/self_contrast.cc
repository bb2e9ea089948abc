#include "engine/self_contrast.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/contrast.h"

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
  scores->assign(strong.begin(), strong.end());
  const float inv_t = temperature > 0.f ? 1.f / temperature : 1.f;
  kernels::cpu::ContrastRow(scores->data(), weak.data(), static_cast<int64_t>(strong.size()), inv_t,
                            std::log(params.alpha), params.beta, params.ban_eos, eos_ids.data(),
                            static_cast<int>(eos_ids.size()));
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
