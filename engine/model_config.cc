#include "engine/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "engine/models/json_util.h"
#include "engine/models/registry.h"

namespace moe {
namespace {

using models::GetBoolOr;
using models::GetFloatOr;
using models::GetInt;
using models::GetIntOr;

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid JSON object"));
  }
  return j;
}

// eos_token_id may be an integer or a list of integers.
absl::Status ReadTokenIds(const nlohmann::json& j, const std::string& key,
                          std::vector<int32_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  out->clear();
  if (it->is_number_integer()) {
    out->push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("'", key, "' must hold integers"));
      }
      out->push_back(v.get<int32_t>());
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be an integer or a list"));
  }
  return absl::OkStatus();
}

absl::Status ParseCommon(const nlohmann::json& j, ModelConfig* cfg) {
  MOE_ASSIGN_OR_RETURN(cfg->vocab_size, GetInt(j, "vocab_size", 1));
  MOE_ASSIGN_OR_RETURN(cfg->hidden_size, GetInt(j, "hidden_size", 1));
  MOE_ASSIGN_OR_RETURN(cfg->num_layers, GetInt(j, "num_hidden_layers", 1));
  MOE_ASSIGN_OR_RETURN(cfg->num_q_heads, GetInt(j, "num_attention_heads", 1));
  MOE_ASSIGN_OR_RETURN(cfg->num_kv_heads, GetIntOr(j, "num_key_value_heads", cfg->num_q_heads, 1));
  if (cfg->num_q_heads % cfg->num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads (", cfg->num_q_heads,
                                                   ") is not a multiple of num_key_value_heads (",
                                                   cfg->num_kv_heads, ")"));
  }
  MOE_ASSIGN_OR_RETURN(cfg->head_dim,
                       GetIntOr(j, "head_dim", cfg->hidden_size / cfg->num_q_heads, 2));
  if (cfg->head_dim % 2 != 0) return absl::InvalidArgumentError("head_dim must be even");
  MOE_ASSIGN_OR_RETURN(cfg->max_position_embeddings,
                       GetIntOr(j, "max_position_embeddings", 4096, 1));
  MOE_ASSIGN_OR_RETURN(cfg->rms_norm_eps, GetFloatOr(j, "rms_norm_eps", 1e-6f));
  MOE_ASSIGN_OR_RETURN(cfg->rope_theta, GetFloatOr(j, "rope_theta", 10000.f));
  MOE_ASSIGN_OR_RETURN(cfg->tie_word_embeddings, GetBoolOr(j, "tie_word_embeddings", false));
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    std::string type;
    if (it->is_object()) {
      type = it->value("rope_type", it->value("type", std::string()));
    }
    if (type != "default") {
      return absl::UnimplementedError(absl::StrCat("unsupported rope_scaling ", it->dump(),
                                                   ": only unscaled RoPE is implemented"));
    }
  }
  if (auto it = j.find("partial_rotary_factor");
      it != j.end() && !it->is_null() && (!it->is_number() || it->get<double>() != 1.0)) {
    return absl::UnimplementedError("unsupported partial_rotary_factor (only 1.0)");
  }
  MOE_RETURN_IF_ERROR(ReadTokenIds(j, "eos_token_id", &cfg->eos_token_ids));
  std::vector<int32_t> bos;
  MOE_RETURN_IF_ERROR(ReadTokenIds(j, "bos_token_id", &bos));
  if (!bos.empty()) cfg->bos_token_id = bos[0];
  return absl::OkStatus();
}

absl::Status Validate(const ModelConfig& cfg) {
  const bool any_moe =
      std::find(cfg.layer_is_moe.begin(), cfg.layer_is_moe.end(), true) != cfg.layer_is_moe.end();
  if (static_cast<int>(cfg.layer_is_moe.size()) != cfg.num_layers) {
    return absl::InternalError("layer_is_moe not set for every layer");
  }
  if (any_moe && (cfg.num_experts < 1 || cfg.top_k < 1 || cfg.top_k > cfg.num_experts ||
                  cfg.moe_intermediate_size < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid MoE shape: experts ", cfg.num_experts,
                                                   ", top-k ", cfg.top_k, ", intermediate ",
                                                   cfg.moe_intermediate_size));
  }
  return absl::OkStatus();
}

// Drops stop ids no token can have, with a warning naming `file`.
void DropEosOutsideVocabulary(const std::string& file, ModelConfig* cfg) {
  std::vector<int32_t> kept;
  for (int32_t id : cfg->eos_token_ids) {
    if (id >= 0 && id < cfg->vocab_size) {
      kept.push_back(id);
    } else {
      cfg->warnings.push_back(absl::StrCat(file, ": eos_token_id ", id,
                                           " is outside the vocabulary of ", cfg->vocab_size,
                                           " tokens; ignored, as transformers does"));
    }
  }
  cfg->eos_token_ids = std::move(kept);
}

// generation_config.json's temperature, top_p and top_k, each checked as a request's.
absl::Status ReadSamplingDefaults(const nlohmann::json& g, ModelConfig* cfg) {
  if (auto it = g.find("temperature"); it != g.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() >= 0) || !std::isfinite(it->get<double>())) {
      return absl::InvalidArgumentError("'temperature' must be a number >= 0");
    }
    cfg->default_temperature = it->get<float>();
  }
  if (auto it = g.find("top_p"); it != g.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() > 0 && it->get<double>() <= 1)) {
      return absl::InvalidArgumentError("'top_p' must be a number in (0, 1]");
    }
    cfg->default_top_p = it->get<float>();
  }
  if (auto it = g.find("top_k"); it != g.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
        it->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError("'top_k' must be an integer >= 0");
    }
    cfg->default_top_k = it->get<int>();
  }
  return absl::OkStatus();
}

}  // namespace

namespace {
absl::StatusOr<ModelConfig> LoadModelConfigUnguarded(const std::string& dir);
}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  try {
    return LoadModelConfigUnguarded(dir);
  } catch (const nlohmann::json::exception& e) {
    // A value of an unexpected type that a reader did not check (the fuzzer found
    // "model_type": 5): a bad file, never a crash.
    return absl::InvalidArgumentError(
        absl::StrCat((std::filesystem::path(dir) / "config.json").string(),
                     " (or generation_config.json): unexpected JSON: ", e.what()));
  }
}

namespace {

absl::StatusOr<ModelConfig> LoadModelConfigUnguarded(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  MOE_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  ModelConfig cfg;
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": 'architectures' must name the model class"));
  }
  cfg.architecture = (*archs)[0].get<std::string>();
  if (auto type = j.find("model_type"); type != j.end() && !type->is_null()) {
    if (!type->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": 'model_type' must be a string"));
    }
    cfg.model_type = type->get<std::string>();
  }
  const models::Architecture* arch = models::FindArchitecture(cfg.architecture);
  if (arch == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": unsupported architecture '", cfg.architecture,
                     "' (supported: ", absl::StrJoin(models::SupportedArchitectures(), ", "), ")"));
  }
  absl::Status s = ParseCommon(j, &cfg);
  if (s.ok()) s = arch->parse_config(j, &cfg);
  if (s.ok()) s = Validate(cfg);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  std::string eos_from = path;

  const std::string gen_path = (std::filesystem::path(dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen_path)) {
    MOE_ASSIGN_OR_RETURN(nlohmann::json g, ReadJsonFile(gen_path));
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) eos_from = gen_path;
    s = ReadTokenIds(g, "eos_token_id", &cfg.eos_token_ids);
    if (s.ok()) s = ReadSamplingDefaults(g, &cfg);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(gen_path, ": ", s.message()));
  }
  DropEosOutsideVocabulary(eos_from, &cfg);
  return cfg;
}

}  // namespace
}  // namespace moe
