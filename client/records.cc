#include "client/records.h"

namespace moe::client {

std::optional<double> RequestRecord::ttft() const {
  if (!first_token) return std::nullopt;
  return *first_token - start;
}

std::optional<double> RequestRecord::tpot() const {
  // TPOT as vLLM's bench serve defines it: the decode time after the first token spread
  // over the remaining output tokens. Undefined for fewer than two tokens.
  if (!first_token || output_tokens < 2) return std::nullopt;
  return (e2e() - *ttft()) / (output_tokens - 1);
}

std::vector<double> RequestRecord::inter_token_latencies() const {
  std::vector<double> gaps;
  if (token_times.size() < 2) return gaps;
  gaps.reserve(token_times.size() - 1);
  for (size_t i = 1; i < token_times.size(); ++i) {
    gaps.push_back(token_times[i] - token_times[i - 1]);
  }
  return gaps;
}

}  // namespace moe::client
