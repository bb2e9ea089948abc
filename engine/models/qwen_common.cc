#include "engine/models/qwen_common.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"

namespace moe::models {

absl::Status ParseQwenMoeCommon(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_ASSIGN_OR_RETURN(cfg->num_experts, GetIntOr(j, "num_experts", 0));
  MOE_ASSIGN_OR_RETURN(cfg->top_k, GetIntOr(j, "num_experts_per_tok", 0));
  MOE_ASSIGN_OR_RETURN(cfg->moe_intermediate_size, GetIntOr(j, "moe_intermediate_size", 0));
  MOE_ASSIGN_OR_RETURN(cfg->intermediate_size, GetIntOr(j, "intermediate_size", 0));
  MOE_ASSIGN_OR_RETURN(cfg->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  MOE_ASSIGN_OR_RETURN(const int step, GetIntOr(j, "decoder_sparse_step", 1, 1));
  MOE_ASSIGN_OR_RETURN(const bool sliding, GetBoolOr(j, "use_sliding_window", false));
  if (sliding) {
    return absl::UnimplementedError("use_sliding_window=true is not supported");
  }
  std::vector<int> mlp_only;
  if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return absl::InvalidArgumentError("'mlp_only_layers' must be a list");
    for (const auto& v : *it) {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError("'mlp_only_layers' must hold integers");
      }
      mlp_only.push_back(v.get<int>());
    }
  }
  cfg->layer_is_moe.resize(cfg->num_layers);
  bool any_dense = false;
  for (int i = 0; i < cfg->num_layers; ++i) {
    cfg->layer_is_moe[i] = std::find(mlp_only.begin(), mlp_only.end(), i) == mlp_only.end() &&
                           cfg->num_experts > 0 && (i + 1) % step == 0;
    any_dense |= !cfg->layer_is_moe[i];
  }
  if (any_dense && cfg->intermediate_size < 1) {
    return absl::InvalidArgumentError("dense layers need 'intermediate_size' > 0");
  }
  return absl::OkStatus();
}

ModelTensorNames QwenMoeNames(const ModelConfig& cfg) {
  ModelTensorNames names = LlamaStyleNames(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerTensorNames& n = names.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".mlp");
    if (cfg.layer_is_moe[i]) {
      SetSwiGluExpertNames(p, cfg.num_experts, &n);
    } else {
      n.mlp_gate_proj = p + ".gate_proj.weight";
      n.mlp_up_proj = p + ".up_proj.weight";
      n.mlp_down_proj = p + ".down_proj.weight";
    }
  }
  return names;
}

}  // namespace moe::models
