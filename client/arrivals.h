// Arrival schedules for the load tester. A closed loop (--concurrency N) needs none: each
// of N workers issues its next request when the previous one ends. An open loop
// (--request-rate R) issues requests at times fixed in advance, independent of how fast
// the server answers, with gaps drawn from a gamma distribution as vLLM's bench serve does:
// shape k = burstiness, scale = 1 / (R * k), so the mean gap is 1/R whatever k is and the
// coefficient of variation is 1/sqrt(k). k = 1 is a Poisson process (exponential gaps);
// k < 1 is burstier, k > 1 more regular.
//
// Determinism: the gaps come from std::mt19937_64 through std::gamma_distribution. The
// engine's output is fixed by the standard, but the distribution's algorithm is
// implementation-defined, so a seed gives the same schedule on every run with libstdc++
// and may give a different one with another standard library.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace moe::client {

// OK when `request_rate` is positive (or +infinity) and `burstiness` is positive and finite;
// InvalidArgument naming the bad value otherwise. The CLI checks its flags with this.
absl::Status ValidateArrivalParams(double request_rate, double burstiness);

// An open-loop schedule produced one arrival at a time, for runs bounded by --duration
// rather than a request count. The first arrival is at t = 0; with request_rate = +inf
// every arrival is at t = 0 (all requests sent at once).
// Precondition: ValidateArrivalParams(request_rate, burstiness).ok().
class ArrivalSchedule {
 public:
  ArrivalSchedule(double request_rate, double burstiness, uint64_t seed);

  // Seconds since the start of the run at which the next request is due; non-decreasing.
  double Next();

 private:
  bool infinite_;
  bool started_ = false;
  double now_ = 0;
  std::mt19937_64 rng_;
  std::gamma_distribution<double> gap_;
};

// The first `n` arrival times of ArrivalSchedule(request_rate, burstiness, seed): size n
// (empty for n <= 0), t[0] = 0, non-decreasing, the same for the same seed. Returns an empty
// vector when the parameters fail ValidateArrivalParams.
std::vector<double> ArrivalTimes(int n, double request_rate, double burstiness, uint64_t seed);

}  // namespace moe::client
