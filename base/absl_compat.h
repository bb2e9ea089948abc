// Debian 12's abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which absl::StrCat and friends take but std::string_view does not convert to.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace moe {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace moe
