// Stop strings over streamed text: emits text as it arrives, except a tail that could
// still become a stop string, and reports the first match (the text stops before it).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace moe::sched {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;                    // safe to emit now
    std::optional<std::string> matched;  // the stop string that matched, if one did
  };
  // Adds `delta` to the output. After a match, further calls return nothing.
  Result Push(const std::string& delta);
  // The held-back tail (no stop string can complete any more).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  size_t longest_ = 0;
  std::string pending_;  // text not emitted yet
  bool done_ = false;
};

}  // namespace moe::sched
