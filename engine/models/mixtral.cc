// MixtralForCausalLM (model_type "mixtral"): Llama attention without biases, every layer
// a sparse MoE block "block_sparse_moe" with experts w1 (gate), w3 (up), w2 (down);
// routing softmax -> top-k -> always renormalised (moe_algorithms.md section 6.1).
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"
#include "engine/models/registry.h"

namespace moe::models {
namespace {

absl::Status ParseMixtral(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_ASSIGN_OR_RETURN(cfg->num_experts, GetInt(j, "num_local_experts", 1));
  MOE_ASSIGN_OR_RETURN(cfg->top_k, GetInt(j, "num_experts_per_tok", 1));
  MOE_ASSIGN_OR_RETURN(cfg->moe_intermediate_size, GetInt(j, "intermediate_size", 1));
  MOE_ASSIGN_OR_RETURN(cfg->sliding_window, GetIntOr(j, "sliding_window", 0));
  cfg->norm_topk_prob = true;
  cfg->layer_is_moe.assign(cfg->num_layers, true);
  return absl::OkStatus();
}

ModelTensorNames MixtralNames(const ModelConfig& cfg) {
  ModelTensorNames names = LlamaStyleNames(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerTensorNames& n = names.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".block_sparse_moe");
    n.router = p + ".gate.weight";
    for (int e = 0; e < cfg.num_experts; ++e) {
      const std::string ep = absl::StrCat(p, ".experts.", e, ".");
      n.expert_gate.push_back(ep + "w1.weight");
      n.expert_up.push_back(ep + "w3.weight");
      n.expert_down.push_back(ep + "w2.weight");
    }
  }
  return names;
}

}  // namespace

const Architecture kMixtral = {"MixtralForCausalLM", &ParseMixtral, &MixtralNames};

}  // namespace moe::models
