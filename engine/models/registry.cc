#include "engine/models/registry.h"

#include "absl/strings/str_cat.h"

namespace moe::models {
namespace {

const Architecture* const kAll[] = {&kMixtral, &kQwen2Moe, &kQwen3Moe, &kOlmoe};

}  // namespace

const Architecture* FindArchitecture(std::string_view name) {
  for (const Architecture* a : kAll) {
    if (a->name == name) return a;
  }
  return nullptr;
}

std::vector<std::string> SupportedArchitectures() {
  std::vector<std::string> out;
  for (const Architecture* a : kAll) out.emplace_back(a->name);
  return out;
}

ModelTensorNames LlamaStyleNames(const ModelConfig& cfg) {
  ModelTensorNames names;
  names.embed_tokens = "model.embed_tokens.weight";
  names.final_norm = "model.norm.weight";
  if (!cfg.tie_word_embeddings) names.lm_head = "lm_head.weight";
  names.layers.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerTensorNames& n = names.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    n.input_norm = p + "input_layernorm.weight";
    n.post_attention_norm = p + "post_attention_layernorm.weight";
    n.q_proj = p + "self_attn.q_proj.weight";
    n.k_proj = p + "self_attn.k_proj.weight";
    n.v_proj = p + "self_attn.v_proj.weight";
    n.o_proj = p + "self_attn.o_proj.weight";
  }
  return names;
}

void SetSwiGluExpertNames(const std::string& prefix, int num_experts, LayerTensorNames* n) {
  n->router = prefix + ".gate.weight";
  for (int e = 0; e < num_experts; ++e) {
    const std::string ep = absl::StrCat(prefix, ".experts.", e, ".");
    n->expert_gate.push_back(ep + "gate_proj.weight");
    n->expert_up.push_back(ep + "up_proj.weight");
    n->expert_down.push_back(ep + "down_proj.weight");
  }
}

}  // namespace moe::models
