#include "engine/expert_source.h"

#include "absl/strings/str_cat.h"
#include "engine/weights.h"

namespace moe {

ResidentExperts::ResidentExperts(const ModelWeights& weights) {
  for (const LayerWeights& w : weights.layers) {
    std::vector<kernels::MatrixRef> gu, dn;
    for (const Weight& x : w.experts_gate_up) gu.push_back(x.ref);
    for (const Weight& x : w.experts_down) dn.push_back(x.ref);
    gate_up_.push_back(std::move(gu));
    down_.push_back(std::move(dn));
  }
}

ResidentExperts::ResidentExperts(std::vector<std::vector<kernels::MatrixRef>> gate_up,
                                 std::vector<std::vector<kernels::MatrixRef>> down)
    : gate_up_(std::move(gate_up)), down_(std::move(down)) {}

absl::StatusOr<ExpertWeights> ResidentExperts::Acquire(int layer,
                                                       std::span<const int32_t> expert_offsets) {
  if (layer < 0 || layer >= static_cast<int>(gate_up_.size()) ||
      expert_offsets.size() != gate_up_[layer].size() + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert source: layer ", layer, " with ", expert_offsets.size() - 1,
                     " experts is not one of this model's MoE layers"));
  }
  return ExpertWeights{gate_up_[layer], down_[layer]};
}

}  // namespace moe
