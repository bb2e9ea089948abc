// What moe-client measures for one request, and the summary statistics of a run. Plain
// structs shared by the transports (client/transport.h), the load generator and the
// statistics (client/stats.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moe::client {

// One request as the client saw it. Times are seconds since the start of the run.
struct RequestRecord {
  int index = 0;                      // order of issue
  double start = 0;                   // request sent
  std::optional<double> first_token;  // first streamed token (or first non-empty chunk)
  double end = 0;                     // last byte / final message
  std::vector<double> token_times;    // arrival time of every streamed token chunk
  int prompt_tokens = 0;              // as the server reported (0 if unknown)
  int output_tokens = 0;              // as the server reported, else counted chunks
  bool warmup = false;                // not counted in the summary
  std::string error;                  // empty: success; else the error kind, e.g. "http_429",
                                      // "grpc_RESOURCE_EXHAUSTED", "timeout", "connect"
  std::string error_message;

  bool ok() const { return error.empty(); }
  double e2e() const { return end - start; }
  std::optional<double> ttft() const;
  // (e2e - ttft) / (output_tokens - 1); nullopt for fewer than 2 tokens.
  std::optional<double> tpot() const;
  // Gaps between consecutive token chunks.
  std::vector<double> inter_token_latencies() const;
};

struct Distribution {
  int count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// Service-level objectives for goodput: a request is "good" when it succeeded and meets
// every limit that is set.
struct Slo {
  std::optional<double> ttft_seconds;
  std::optional<double> tpot_seconds;
};

struct Summary {
  int completed = 0;  // successful, non-warm-up requests
  int failed = 0;
  std::map<std::string, int> errors_by_kind;
  double duration_seconds = 0;         // first counted start to last counted end
  double request_throughput = 0;       // completed / duration
  double output_token_throughput = 0;  // output tokens / duration
  double total_token_throughput = 0;   // (prompt + output) tokens / duration
  int64_t prompt_tokens = 0, output_tokens = 0;
  Distribution ttft, tpot, itl, e2e;
  int good = 0;              // requests meeting the SLO
  double goodput = 0;        // good / duration
  int peak_concurrency = 0;  // most requests in flight at once
};

}  // namespace moe::client
