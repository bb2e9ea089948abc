// Summary statistics of a load-test run: distributions, throughput, goodput and peak
// concurrency from the per-request records. Pure functions; no I/O.
#pragma once

#include <string>
#include <vector>

#include "client/records.h"

namespace moe::client {

// Mean, p50, p90, p99 and max of `values` (taken by value: it is sorted in place).
// Percentiles use linear interpolation between the closest ranks, numpy.percentile's
// default ('linear', Hyndman & Fan type 7): for sorted values v[0..n-1] the p-th
// percentile sits at rank r = p/100 * (n - 1) and is v[floor(r)] + frac(r) *
// (v[floor(r)+1] - v[floor(r)]). Values 1..10 give p50 5.5, p90 9.1, p99 9.91.
// An empty input gives a Distribution with count 0 and every statistic 0.
Distribution Describe(std::vector<double> values);

// The statistics of a run. Warm-up records are skipped entirely. Over the counted records:
//   completed / failed, and failures counted by RequestRecord::error;
//   duration: the first counted start to the last counted end (failures included);
//   throughputs: completed requests, output tokens and prompt + output tokens of the
//     successful requests, each divided by the duration (0 when the duration is 0);
//   TTFT, TPOT, ITL (every gap between token chunks) and E2E distributions over the
//     successful requests (a request without a first token or with fewer than two output
//     tokens contributes no TTFT or TPOT);
//   good: successful requests meeting every limit set in `slo` (a TTFT limit fails a request
//     with no first token; a TPOT limit is met by a request with fewer than two tokens,
//     which has no decode phase to judge); goodput = good / duration;
//   peak concurrency: the most counted requests in flight at once, by a sweep over start
//     and end events (a request ending at t and one starting at t do not overlap).
Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo);

// A multi-line human-readable report in the layout of vLLM's `bench serve`; latencies in
// milliseconds.
std::string FormatSummary(const Summary& summary);

}  // namespace moe::client
