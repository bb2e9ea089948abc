// Qwen2MoeForCausalLM (model_type "qwen2_moe"): attention with q/k/v biases (qkv_bias);
// sparse layers chosen by decoder_sparse_step and mlp_only_layers, the others dense MLPs;
// routing softmax -> top-k -> renormalised iff norm_topk_prob; a shared expert scaled by
// sigmoid(shared_expert_gate(x)) (moe_algorithms.md section 6.2).
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"
#include "engine/models/qwen_common.h"
#include "engine/models/registry.h"

namespace moe::models {
namespace {

absl::Status ParseQwen2Moe(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_RETURN_IF_ERROR(ParseQwenMoeCommon(j, cfg));
  MOE_ASSIGN_OR_RETURN(cfg->qkv_bias, GetBoolOr(j, "qkv_bias", true));
  MOE_ASSIGN_OR_RETURN(cfg->shared_expert_intermediate_size,
                       GetIntOr(j, "shared_expert_intermediate_size", 0));
  return absl::OkStatus();
}

ModelTensorNames Qwen2MoeNames(const ModelConfig& cfg) {
  ModelTensorNames names = QwenMoeNames(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    if (!cfg.layer_is_moe[i] || cfg.shared_expert_intermediate_size == 0) continue;
    LayerTensorNames& n = names.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".mlp.");
    n.shared_gate_proj = p + "shared_expert.gate_proj.weight";
    n.shared_up_proj = p + "shared_expert.up_proj.weight";
    n.shared_down_proj = p + "shared_expert.down_proj.weight";
    n.shared_expert_gate = p + "shared_expert_gate.weight";
  }
  return names;
}

}  // namespace

const Architecture kQwen2Moe = {"Qwen2MoeForCausalLM", &ParseQwen2Moe, &Qwen2MoeNames};

}  // namespace moe::models
