#include "client/arrivals.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moe::client {

absl::Status ValidateArrivalParams(double request_rate, double burstiness) {
  if (std::isnan(request_rate) || request_rate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("request rate must be positive (or inf), got ", request_rate));
  }
  if (!std::isfinite(burstiness) || burstiness <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("burstiness must be positive and finite, got ", burstiness));
  }
  return absl::OkStatus();
}

ArrivalSchedule::ArrivalSchedule(double request_rate, double burstiness, uint64_t seed)
    : infinite_(std::isinf(request_rate)),
      rng_(seed),
      // gamma(shape k, scale theta): mean k * theta = 1 / rate.
      gap_(burstiness, infinite_ ? 1.0 : 1.0 / (request_rate * burstiness)) {}

double ArrivalSchedule::Next() {
  if (infinite_) return 0;
  if (started_) now_ += gap_(rng_);
  started_ = true;
  return now_;
}

std::vector<double> ArrivalTimes(int n, double request_rate, double burstiness, uint64_t seed) {
  std::vector<double> times;
  if (n <= 0 || !ValidateArrivalParams(request_rate, burstiness).ok()) return times;
  times.reserve(n);
  ArrivalSchedule schedule(request_rate, burstiness, seed);
  for (int i = 0; i < n; ++i) times.push_back(schedule.Next());
  return times;
}

}  // namespace moe::client
