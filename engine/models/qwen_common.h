// What Qwen2-MoE and Qwen3-MoE share: the sparse-layer rule and the expert names.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "absl/status/status.h"
#include "engine/model_config.h"
#include "engine/models/registry.h"

namespace moe::models {

// num_experts, num_experts_per_tok, moe_intermediate_size, intermediate_size (dense),
// norm_topk_prob, and layer_is_moe: layer i is sparse iff i is not in mlp_only_layers,
// num_experts > 0 and (i + 1) % decoder_sparse_step == 0. use_sliding_window is refused.
absl::Status ParseQwenMoeCommon(const nlohmann::json& j, ModelConfig* cfg);
// Llama attention names; mlp.gate + mlp.experts.N.{gate,up,down}_proj on sparse layers,
// mlp.{gate,up,down}_proj on dense ones.
ModelTensorNames QwenMoeNames(const ModelConfig& cfg);

}  // namespace moe::models
