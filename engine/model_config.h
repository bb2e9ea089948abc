// What the engine needs to know about a checkpoint, read from config.json and
// generation_config.json. Each supported architecture has one file in engine/models/
// that maps its config keys and tensor names onto these structs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

enum class QkNorm {
  kNone,
  kPerHead,    // RMSNorm over head_dim per head, before RoPE (Qwen3-MoE)
  kFullWidth,  // RMSNorm over num_heads*head_dim, before the head reshape (OLMoE)
};

struct ModelConfig {
  std::string architecture;  // e.g. "MixtralForCausalLM"
  std::string model_type;    // e.g. "mixtral"

  int vocab_size = 0;
  int hidden_size = 0;  // H
  int num_layers = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // D
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.f;
  int sliding_window = 0;  // 0: full causal attention
  bool qkv_bias = false;   // q, k and v projections have a bias
  bool o_bias = false;     // the output projection has a bias
  QkNorm qk_norm = QkNorm::kNone;
  float clip_qkv = 0.f;  // > 0: clamp q, k, v to +-clip_qkv (OLMoE)
  bool tie_word_embeddings = false;

  // MoE
  int num_experts = 0;                      // E
  int top_k = 0;                            // K
  int moe_intermediate_size = 0;            // I of a routed expert
  bool norm_topk_prob = false;              // renormalise the K routing weights
  int shared_expert_intermediate_size = 0;  // 0: no shared expert (Qwen2-MoE has one)
  int intermediate_size = 0;                // dense MLP layers' I
  std::vector<bool> layer_is_moe;           // [num_layers]

  // Stop tokens: generation_config.json's eos_token_id if present, else config.json's.
  // Ids outside the vocabulary are dropped with a warning, as transformers ignores them
  // (OlmoeConfig's default eos_token_id is 50282 whatever the vocabulary).
  std::vector<int32_t> eos_token_ids;
  int32_t bos_token_id = -1;  // -1: none

  // generation_config.json's sampling defaults, for requests that leave them unset (as
  // vLLM applies them; do_sample is not consulted). Unset: the API's own defaults.
  std::optional<float> default_temperature;
  std::optional<float> default_top_p;
  std::optional<int> default_top_k;

  // What the loader noticed and accepted, e.g. an ignored eos_token_id (the server
  // logs these at start-up).
  std::vector<std::string> warnings;
};

// Reads `dir`/config.json (and generation_config.json when present) for a supported
// architecture. Errors name the file and the key: missing file, bad JSON, unsupported
// architecture, unsupported rope_scaling, missing or invalid values.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace moe
