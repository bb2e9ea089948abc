// The load generator of `moe-client bench`: closed loop (N workers, each sending its next
// request when the previous one ends) or open loop (requests issued at arrival times
// fixed in advance, client/arrivals.h), bounded by a request count or a duration, with
// warm-up requests first and a live progress line on stderr.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "client/prompts.h"
#include "client/records.h"
#include "client/transport.h"

namespace moe::client {

struct BenchConfig {
  int concurrency = 1;                 // closed loop: workers
  std::optional<double> request_rate;  // set: open loop at this many requests per second
  double burstiness = 1.0;             // open loop: gamma shape of the gaps (1: Poisson)
  int num_requests = 0;                // > 0: this many counted requests
  double duration_seconds = 0;         // > 0 (and num_requests 0): issue requests this long
  int warmup = 0;                      // requests sent first, at the same concurrency, not counted
  int max_in_flight = 1024;            // open loop: requests in flight at most
  uint64_t seed = 0;                   // arrival schedule
  bool progress = false;               // the \r progress line on stderr
  GenerateOptions options;
};

// Runs the load against `transport`, taking prompts round-robin from `prompts` (not
// empty). Returns every record, warm-up ones (warmup = true) first, with times in seconds
// since the start of the run. Stops by itself: after the count or the duration, every
// request bounded by options.timeout.
std::vector<RequestRecord> RunBench(Transport& transport, const std::vector<PromptSpec>& prompts,
                                    const BenchConfig& config);

}  // namespace moe::client
