#include "server/api_keys.h"

#include <fstream>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"

namespace moe::server {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

// Equal in length and bytes, touching every byte of the longer one whatever differs.
bool SameBytes(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::vector<std::string>& keys,
                                      const std::vector<std::string>& files) {
  ApiKeys out;
  for (const std::string& key : keys) {
    const std::string_view trimmed = Trim(key);
    if (trimmed.empty()) return absl::InvalidArgumentError("--api-key: an empty key");
    out.keys_.emplace_back(trimmed);
  }
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat("--api-key-file: cannot read ", ToAbsl(file)));
    size_t found = 0;
    std::string line;
    while (std::getline(in, line)) {
      const std::string_view trimmed = Trim(line);
      if (trimmed.empty() || trimmed[0] == '#') continue;
      out.keys_.emplace_back(trimmed);
      ++found;
    }
    if (found == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file: ", ToAbsl(file), " holds no key"));
    }
  }
  return out;
}

bool ApiKeys::Allows(std::string_view authorization) const {
  if (keys_.empty()) return true;
  authorization = Trim(authorization);
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() || !StartsWithIgnoreCase(authorization, kScheme)) {
    return false;
  }
  const std::string_view key = Trim(authorization.substr(kScheme.size()));
  bool allowed = false;
  for (const std::string& k : keys_) allowed |= SameBytes(k, key);  // no early exit
  return allowed;
}

}  // namespace moe::server
