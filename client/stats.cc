#include "client/stats.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::client {
namespace {

// numpy.percentile(method='linear') over sorted, non-empty `v`; p in [0, 100].
double Percentile(const std::vector<double>& v, double p) {
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (rank - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

double PerSecond(double amount, double seconds) { return seconds > 0 ? amount / seconds : 0; }

}  // namespace

Distribution Describe(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = static_cast<int>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  d.max = values.back();
  return d;
}

Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo) {
  Summary s;
  std::vector<double> ttft, tpot, itl, e2e;
  // (time, +1 start / -1 end); ends sort before starts at equal times.
  std::vector<std::pair<double, int>> events;
  double first_start = 0, last_end = 0;
  bool any = false;
  for (const RequestRecord& r : records) {
    if (r.warmup) continue;
    first_start = any ? std::min(first_start, r.start) : r.start;
    last_end = any ? std::max(last_end, r.end) : r.end;
    any = true;
    events.emplace_back(r.start, +1);
    events.emplace_back(r.end, -1);
    if (!r.ok()) {
      ++s.failed;
      ++s.errors_by_kind[r.error];
      continue;
    }
    ++s.completed;
    s.prompt_tokens += r.prompt_tokens;
    s.output_tokens += r.output_tokens;
    const std::optional<double> r_ttft = r.ttft();
    const std::optional<double> r_tpot = r.tpot();
    if (r_ttft) ttft.push_back(*r_ttft);
    if (r_tpot) tpot.push_back(*r_tpot);
    const std::vector<double> gaps = r.inter_token_latencies();
    itl.insert(itl.end(), gaps.begin(), gaps.end());
    e2e.push_back(r.e2e());
    const bool ttft_ok = !slo.ttft_seconds || (r_ttft && *r_ttft <= *slo.ttft_seconds);
    const bool tpot_ok = !slo.tpot_seconds || !r_tpot || *r_tpot <= *slo.tpot_seconds;
    if (ttft_ok && tpot_ok) ++s.good;
  }
  s.duration_seconds = any ? std::max(0.0, last_end - first_start) : 0;
  s.request_throughput = PerSecond(s.completed, s.duration_seconds);
  s.output_token_throughput = PerSecond(static_cast<double>(s.output_tokens), s.duration_seconds);
  s.total_token_throughput =
      PerSecond(static_cast<double>(s.prompt_tokens + s.output_tokens), s.duration_seconds);
  s.goodput = PerSecond(s.good, s.duration_seconds);
  s.ttft = Describe(std::move(ttft));
  s.tpot = Describe(std::move(tpot));
  s.itl = Describe(std::move(itl));
  s.e2e = Describe(std::move(e2e));

  std::sort(events.begin(), events.end());
  int in_flight = 0;
  for (const auto& [time, delta] : events) {
    in_flight += delta;
    s.peak_concurrency = std::max(s.peak_concurrency, in_flight);
  }
  return s;
}

namespace {

constexpr int kWidth = 50;

std::string Title(const std::string& title, char fill) {
  const int pad = kWidth - static_cast<int>(title.size()) - 2;
  const int left = std::max(0, pad / 2), right = std::max(0, pad - pad / 2);
  return absl::StrCat(std::string(left, fill), " ", title, " ", std::string(right, fill), "\n");
}

std::string Row(const std::string& label, const std::string& value) {
  return absl::StrFormat("%-40s%10s\n", label + ":", value);
}

std::string Num(double v) { return absl::StrFormat("%.2f", v); }

std::string LatencyBlock(const std::string& title, const std::string& name, const Distribution& d) {
  std::string out = Title(title, '-');
  const double ms = 1000.0;
  absl::StrAppend(&out, Row(absl::StrCat("Mean ", name, " (ms)"), Num(d.mean * ms)));
  absl::StrAppend(&out, Row(absl::StrCat("P50 ", name, " (ms)"), Num(d.p50 * ms)));
  absl::StrAppend(&out, Row(absl::StrCat("P90 ", name, " (ms)"), Num(d.p90 * ms)));
  absl::StrAppend(&out, Row(absl::StrCat("P99 ", name, " (ms)"), Num(d.p99 * ms)));
  absl::StrAppend(&out, Row(absl::StrCat("Max ", name, " (ms)"), Num(d.max * ms)));
  return out;
}

}  // namespace

std::string FormatSummary(const Summary& s) {
  std::string out = Title("Serving Benchmark Result", '=');
  absl::StrAppend(&out, Row("Successful requests", absl::StrCat(s.completed)));
  absl::StrAppend(&out, Row("Failed requests", absl::StrCat(s.failed)));
  for (const auto& [kind, count] : s.errors_by_kind) {
    absl::StrAppend(&out, Row(absl::StrCat("  ", kind), absl::StrCat(count)));
  }
  absl::StrAppend(&out, Row("Benchmark duration (s)", Num(s.duration_seconds)));
  absl::StrAppend(&out, Row("Total input tokens", absl::StrCat(s.prompt_tokens)));
  absl::StrAppend(&out, Row("Total generated tokens", absl::StrCat(s.output_tokens)));
  absl::StrAppend(&out, Row("Request throughput (req/s)", Num(s.request_throughput)));
  absl::StrAppend(&out, Row("Output token throughput (tok/s)", Num(s.output_token_throughput)));
  absl::StrAppend(&out, Row("Total token throughput (tok/s)", Num(s.total_token_throughput)));
  absl::StrAppend(&out, Row("Good requests (SLO met)", absl::StrCat(s.good)));
  absl::StrAppend(&out, Row("Request goodput (req/s)", Num(s.goodput)));
  absl::StrAppend(&out, Row("Peak concurrent requests", absl::StrCat(s.peak_concurrency)));
  absl::StrAppend(&out, LatencyBlock("Time to First Token", "TTFT", s.ttft));
  absl::StrAppend(&out, LatencyBlock("Time per Output Token (excl. 1st token)", "TPOT", s.tpot));
  absl::StrAppend(&out, LatencyBlock("Inter-token Latency", "ITL", s.itl));
  absl::StrAppend(&out, LatencyBlock("End-to-end Latency", "E2E", s.e2e));
  absl::StrAppend(&out, std::string(kWidth, '='), "\n");
  return out;
}

}  // namespace moe::client
