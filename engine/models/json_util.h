// Typed reads of config.json keys with errors that name the key. Internal to engine/.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace moe::models {

// Required integer key; must be >= min_value.
absl::StatusOr<int> GetInt(const nlohmann::json& j, const std::string& key, int min_value = 0);
// Optional integer key (absent or null -> fallback).
absl::StatusOr<int> GetIntOr(const nlohmann::json& j, const std::string& key, int fallback,
                             int min_value = 0);
absl::StatusOr<float> GetFloatOr(const nlohmann::json& j, const std::string& key, float fallback);
absl::StatusOr<bool> GetBoolOr(const nlohmann::json& j, const std::string& key, bool fallback);

}  // namespace moe::models
