#include "scheduler/stop_strings.h"

#include <algorithm>

namespace moe::sched {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
  for (const std::string& s : stops_) longest_ = std::max(longest_, s.size());
}

StopStringMatcher::Result StopStringMatcher::Push(const std::string& delta) {
  Result r;
  if (done_) return r;
  pending_ += delta;
  if (stops_.empty()) {
    r.text.swap(pending_);
    return r;
  }
  // The earliest match in the pending text (pending_ never holds a complete stop string
  // from earlier calls, so every match ends inside the new text or spans into it).
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at != std::string::npos && (at < best || (at == best && s.size() > best_stop->size()))) {
      best = at;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    r.text = pending_.substr(0, best);
    r.matched = *best_stop;
    pending_.clear();
    done_ = true;
    return r;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t max_hold = std::min(pending_.size(), longest_ - 1);
  for (size_t len = max_hold; len > 0 && hold == 0; --len) {
    const std::string_view tail(pending_.data() + pending_.size() - len, len);
    for (const std::string& s : stops_) {
      if (s.size() > len && std::string_view(s).substr(0, len) == tail) {
        hold = len;
        break;
      }
    }
  }
  r.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return r;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  if (!done_) out.swap(pending_);
  return out;
}

}  // namespace moe::sched
