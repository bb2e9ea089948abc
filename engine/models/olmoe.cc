// OlmoeForCausalLM (model_type "olmoe"): RMSNorm on q and k over the full projection
// width before the head reshape, optional clamp of q, k and v (clip_qkv), optional
// attention biases; every layer sparse, softmax -> top-k -> renormalised iff
// norm_topk_prob (moe_algorithms.md section 6.4).
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"
#include "engine/models/registry.h"

namespace moe::models {
namespace {

absl::Status ParseOlmoe(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_ASSIGN_OR_RETURN(cfg->num_experts, GetInt(j, "num_experts", 1));
  MOE_ASSIGN_OR_RETURN(cfg->top_k, GetInt(j, "num_experts_per_tok", 1));
  MOE_ASSIGN_OR_RETURN(cfg->moe_intermediate_size, GetInt(j, "intermediate_size", 1));
  MOE_ASSIGN_OR_RETURN(cfg->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  MOE_ASSIGN_OR_RETURN(cfg->clip_qkv, GetFloatOr(j, "clip_qkv", 0.f));
  MOE_ASSIGN_OR_RETURN(cfg->qkv_bias, GetBoolOr(j, "attention_bias", false));
  cfg->o_bias = cfg->qkv_bias;
  cfg->qk_norm = QkNorm::kFullWidth;
  cfg->layer_is_moe.assign(cfg->num_layers, true);
  return absl::OkStatus();
}

ModelTensorNames OlmoeNames(const ModelConfig& cfg) {
  ModelTensorNames names = LlamaStyleNames(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerTensorNames& n = names.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    n.q_norm = p + "self_attn.q_norm.weight";
    n.k_norm = p + "self_attn.k_norm.weight";
    SetSwiGluExpertNames(p + "mlp", cfg.num_experts, &n);
  }
  return names;
}

}  // namespace

const Architecture kOlmoe = {"OlmoeForCausalLM", &ParseOlmoe, &OlmoeNames};

}  // namespace moe::models
