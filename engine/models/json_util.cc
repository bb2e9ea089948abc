#include "engine/models/json_util.h"

namespace moe::models {

absl::StatusOr<int> GetIntOr(const nlohmann::json& j, const std::string& key, int fallback,
                             int min_value) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must be an integer"));
  }
  const int64_t v = it->get<int64_t>();
  if (v < min_value || v > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("config key '", key, "' = ", v, " is out of range (>= ", min_value, ")"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<int> GetInt(const nlohmann::json& j, const std::string& key, int min_value) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' is missing"));
  }
  return GetIntOr(j, key, 0, min_value);
}

absl::StatusOr<float> GetFloatOr(const nlohmann::json& j, const std::string& key, float fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must be a number"));
  }
  return it->get<float>();
}

absl::StatusOr<bool> GetBoolOr(const nlohmann::json& j, const std::string& key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must be a boolean"));
  }
  return it->get<bool>();
}

}  // namespace moe::models
