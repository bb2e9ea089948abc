// Qwen3MoeForCausalLM (model_type "qwen3_moe"): Qwen2-MoE without the shared expert, with
// a per-head RMSNorm on q and k before RoPE, optional attention biases (attention_bias,
// also on o_proj) and an explicit head_dim (moe_algorithms.md section 6.3).
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"
#include "engine/models/qwen_common.h"
#include "engine/models/registry.h"

namespace moe::models {
namespace {

absl::Status ParseQwen3Moe(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_RETURN_IF_ERROR(ParseQwenMoeCommon(j, cfg));
  MOE_ASSIGN_OR_RETURN(cfg->qkv_bias, GetBoolOr(j, "attention_bias", false));
  cfg->o_bias = cfg->qkv_bias;
  cfg->qk_norm = QkNorm::kPerHead;
  return absl::OkStatus();
}

ModelTensorNames Qwen3MoeNames(const ModelConfig& cfg) {
  ModelTensorNames names = QwenMoeNames(cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".self_attn.");
    names.layers[i].q_norm = p + "q_norm.weight";
    names.layers[i].k_norm = p + "k_norm.weight";
  }
  return names;
}

}  // namespace

const Architecture kQwen3Moe = {"Qwen3MoeForCausalLM", &ParseQwen3Moe, &Qwen3MoeNames};

}  // namespace moe::models
