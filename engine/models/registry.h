// The supported architectures. Adding one (DeepSeek-V2/V3, ...) is one more file in
// engine/models/ and one line in registry.cc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/status.h"
#include "engine/model_config.h"

namespace moe::models {

// Tensor names of one decoder layer. Empty strings mean "not present".
struct LayerTensorNames {
  std::string input_norm, post_attention_norm;
  std::string q_proj, k_proj, v_proj, o_proj;  // weights; biases are name + ".bias"
  std::string q_norm, k_norm;
  // MoE layers
  std::string router;
  std::vector<std::string> expert_gate, expert_up, expert_down;  // [E]
  std::string shared_gate_proj, shared_up_proj, shared_down_proj, shared_expert_gate;
  // dense MLP layers
  std::string mlp_gate_proj, mlp_up_proj, mlp_down_proj;
};

struct ModelTensorNames {
  std::string embed_tokens, final_norm, lm_head;  // lm_head empty when tied
  std::vector<LayerTensorNames> layers;
};

struct Architecture {
  std::string_view name;  // config.json "architectures"[0]
  // Fills the family-specific fields of `cfg` from config.json (the common ones are
  // already set). Errors name the key.
  absl::Status (*parse_config)(const nlohmann::json& config, ModelConfig* cfg);
  ModelTensorNames (*tensor_names)(const ModelConfig& cfg);
};

// nullptr when unsupported.
const Architecture* FindArchitecture(std::string_view name);
std::vector<std::string> SupportedArchitectures();

// Per-family definitions, one file each.
extern const Architecture kMixtral;
extern const Architecture kQwen2Moe;
extern const Architecture kQwen3Moe;
extern const Architecture kOlmoe;

// Shared by the families: model.embed_tokens, model.norm, lm_head (unless tied) and, for
// every layer, the Llama-style norm and attention names (model.layers.N.self_attn.*).
ModelTensorNames LlamaStyleNames(const ModelConfig& cfg);
// Router and expert FFN names under `prefix` ("model.layers.3.mlp"): prefix.gate and
// prefix.experts.N.{gate,up,down}_proj (Qwen and OLMoE; Mixtral names its own).
void SetSwiGluExpertNames(const std::string& prefix, int num_experts, LayerTensorNames* names);

}  // namespace moe::models
