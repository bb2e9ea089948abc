// Optional API keys for both front ends: requests carry `Authorization: Bearer KEY` (the
// HTTP header, or the gRPC metadata of the same name). Health, readiness and metrics
// stay open; everything else needs one of the keys when any is set.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::server {

class ApiKeys {
 public:
  // `keys` from flags, and `files` of one key per line (blank lines and lines starting
  // with '#' skipped; surrounding spaces trimmed). InvalidArgument for an empty key or a
  // file that has none, NotFound for a file that cannot be read. No keys at all: every
  // request is allowed.
  static absl::StatusOr<ApiKeys> Load(const std::vector<std::string>& keys,
                                      const std::vector<std::string>& files);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // Whether `authorization` ("Bearer KEY"; the scheme's case is ignored) names one of
  // the keys, compared in time that does not depend on where a key differs. Always true
  // when no key is set.
  bool Allows(std::string_view authorization) const;

 private:
  std::vector<std::string> keys_;
};

}  // namespace moe::server
