// moe-client's statistics against hand-computed values. Percentiles use numpy's default
// 'linear' method: rank r = p/100 * (n - 1) over the sorted values, interpolated between
// v[floor(r)] and v[floor(r) + 1].
#include <gtest/gtest.h>

#include <vector>

#include "client/records.h"
#include "client/stats.h"

namespace moe::client {
namespace {

constexpr double kEps = 1e-9;

TEST(DescribeTest, OneToTen) {
  // Sorted 1..10, n = 10, ranks over 0..9:
  //   p50: r = 4.5  -> v[4] + 0.5  * (v[5] - v[4]) = 5 + 0.5  = 5.5
  //   p90: r = 8.1  -> v[8] + 0.1  * (v[9] - v[8]) = 9 + 0.1  = 9.1
  //   p99: r = 8.91 -> v[8] + 0.91 * (v[9] - v[8]) = 9 + 0.91 = 9.91
  //   mean 55 / 10 = 5.5, max 10.
  const Distribution d = Describe({7, 3, 10, 1, 5, 9, 2, 8, 4, 6});  // unsorted on purpose
  EXPECT_EQ(d.count, 10);
  EXPECT_NEAR(d.mean, 5.5, kEps);
  EXPECT_NEAR(d.p50, 5.5, kEps);
  EXPECT_NEAR(d.p90, 9.1, kEps);
  EXPECT_NEAR(d.p99, 9.91, kEps);
  EXPECT_NEAR(d.max, 10, kEps);
}

TEST(DescribeTest, ThreeValues) {
  // Sorted {1, 2, 3}: p50 r = 1 -> 2; p90 r = 1.8 -> 2 + 0.8 = 2.8; p99 r = 1.98 -> 2.98
  // (numpy.percentile([1, 2, 3], [50, 90, 99]) gives the same).
  const Distribution d = Describe({3, 1, 2});
  EXPECT_EQ(d.count, 3);
  EXPECT_NEAR(d.mean, 2, kEps);
  EXPECT_NEAR(d.p50, 2, kEps);
  EXPECT_NEAR(d.p90, 2.8, kEps);
  EXPECT_NEAR(d.p99, 2.98, kEps);
  EXPECT_NEAR(d.max, 3, kEps);
}

TEST(DescribeTest, SingleValueAndEmpty) {
  const Distribution one = Describe({0.25});
  EXPECT_EQ(one.count, 1);
  EXPECT_DOUBLE_EQ(one.mean, 0.25);
  EXPECT_DOUBLE_EQ(one.p50, 0.25);
  EXPECT_DOUBLE_EQ(one.p99, 0.25);
  EXPECT_DOUBLE_EQ(one.max, 0.25);
  const Distribution none = Describe({});
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.mean, 0);
  EXPECT_EQ(none.p99, 0);
  EXPECT_EQ(none.max, 0);
}

RequestRecord Ok(int index, double start, std::vector<double> tokens, int prompt_tokens) {
  RequestRecord r;
  r.index = index;
  r.start = start;
  r.first_token = tokens.front();
  r.end = tokens.back();
  r.output_tokens = static_cast<int>(tokens.size());
  r.token_times = std::move(tokens);
  r.prompt_tokens = prompt_tokens;
  return r;
}

RequestRecord Failed(int index, double start, double end, const char* kind) {
  RequestRecord r;
  r.index = index;
  r.start = start;
  r.end = end;
  r.error = kind;
  r.error_message = "something went wrong";
  r.prompt_tokens = 100;  // must not count: failures contribute no tokens
  r.output_tokens = 7;
  return r;
}

TEST(RecordTest, PerRequestLatencies) {
  const RequestRecord r = Ok(0, 1.0, {1.5, 1.6, 1.8, 2.1}, 10);
  EXPECT_NEAR(*r.ttft(), 0.5, kEps);
  EXPECT_NEAR(r.e2e(), 1.1, kEps);
  // (e2e - ttft) / (n - 1) = (1.1 - 0.5) / 3 = 0.2
  EXPECT_NEAR(*r.tpot(), 0.2, kEps);
  const std::vector<double> itl = r.inter_token_latencies();
  ASSERT_EQ(itl.size(), 3u);
  EXPECT_NEAR(itl[0], 0.1, kEps);
  EXPECT_NEAR(itl[1], 0.2, kEps);
  EXPECT_NEAR(itl[2], 0.3, kEps);

  const RequestRecord single = Ok(1, 0, {0.3}, 1);
  EXPECT_NEAR(*single.ttft(), 0.3, kEps);
  EXPECT_FALSE(single.tpot().has_value());
  EXPECT_TRUE(single.inter_token_latencies().empty());

  const RequestRecord failed = Failed(2, 0, 1, "connect");
  EXPECT_FALSE(failed.ok());
  EXPECT_FALSE(failed.ttft().has_value());
  EXPECT_FALSE(failed.tpot().has_value());
}

// Counted records (the warm-up one spans [0, 100] and would change duration and peak):
//   R1 ok   [1.0, 2.1] tokens 1.5 1.6 1.8 2.1  ttft 0.5  tpot 0.6/3 = 0.2  itl .1 .2 .3
//   R2 ok   [1.5, 1.7] tokens 1.6 1.7          ttft 0.1  tpot 0.1/1 = 0.1  itl .1
//   R3 ok   [2.0, 4.0] tokens 3.0 3.5 4.0      ttft 1.0  tpot 1.0/2 = 0.5  itl .5 .5
//   R4 429  [2.05, 2.1]
//   R5 tmo  [3.5, 5.0]
//   R6 429  [4.5, 4.6]
//   R7 ok   [4.6, 4.8] tokens 4.8              ttft 0.2  no tpot, no itl
// prompt tokens 10 + 20 + 30 + 5 = 65; output tokens 4 + 2 + 3 + 1 = 10.
std::vector<RequestRecord> HandMadeRun() {
  RequestRecord warmup = Ok(0, 0.0, {50.0, 100.0}, 1000);
  warmup.warmup = true;
  return {warmup,
          Ok(1, 1.0, {1.5, 1.6, 1.8, 2.1}, 10),
          Ok(2, 1.5, {1.6, 1.7}, 20),
          Ok(3, 2.0, {3.0, 3.5, 4.0}, 30),
          Failed(4, 2.05, 2.1, "http_429"),
          Failed(5, 3.5, 5.0, "timeout"),
          Failed(6, 4.5, 4.6, "http_429"),
          Ok(7, 4.6, {4.8}, 5)};
}

TEST(SummarizeTest, HandMadeRun) {
  Slo slo;
  slo.ttft_seconds = 0.5;
  slo.tpot_seconds = 0.25;
  const Summary s = Summarize(HandMadeRun(), slo);
  EXPECT_EQ(s.completed, 4);
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.errors_by_kind, (std::map<std::string, int>{{"http_429", 2}, {"timeout", 1}}));
  // First counted start 1.0 to last counted end 5.0.
  EXPECT_NEAR(s.duration_seconds, 4.0, kEps);
  EXPECT_EQ(s.prompt_tokens, 65);
  EXPECT_EQ(s.output_tokens, 10);
  EXPECT_NEAR(s.request_throughput, 4 / 4.0, kEps);
  EXPECT_NEAR(s.output_token_throughput, 10 / 4.0, kEps);
  EXPECT_NEAR(s.total_token_throughput, 75 / 4.0, kEps);

  // TTFT sorted 0.1 0.2 0.5 1.0: mean 1.8/4 = 0.45; p50 r 1.5 -> 0.2 + 0.5*0.3 = 0.35;
  // p90 r 2.7 -> 0.5 + 0.7*0.5 = 0.85; p99 r 2.97 -> 0.5 + 0.97*0.5 = 0.985.
  EXPECT_EQ(s.ttft.count, 4);
  EXPECT_NEAR(s.ttft.mean, 0.45, kEps);
  EXPECT_NEAR(s.ttft.p50, 0.35, kEps);
  EXPECT_NEAR(s.ttft.p90, 0.85, kEps);
  EXPECT_NEAR(s.ttft.p99, 0.985, kEps);
  EXPECT_NEAR(s.ttft.max, 1.0, kEps);

  // TPOT sorted 0.1 0.2 0.5: mean 0.8/3; p50 r 1 -> 0.2; p90 r 1.8 -> 0.2 + 0.8*0.3 = 0.44;
  // p99 r 1.98 -> 0.2 + 0.98*0.3 = 0.494.
  EXPECT_EQ(s.tpot.count, 3);
  EXPECT_NEAR(s.tpot.mean, 0.8 / 3, kEps);
  EXPECT_NEAR(s.tpot.p50, 0.2, kEps);
  EXPECT_NEAR(s.tpot.p90, 0.44, kEps);
  EXPECT_NEAR(s.tpot.p99, 0.494, kEps);
  EXPECT_NEAR(s.tpot.max, 0.5, kEps);

  // ITL sorted 0.1 0.1 0.2 0.3 0.5 0.5: mean 1.7/6; p50 r 2.5 -> 0.25; p90 r 4.5 -> 0.5;
  // p99 r 4.95 -> 0.5.
  EXPECT_EQ(s.itl.count, 6);
  EXPECT_NEAR(s.itl.mean, 1.7 / 6, kEps);
  EXPECT_NEAR(s.itl.p50, 0.25, kEps);
  EXPECT_NEAR(s.itl.p90, 0.5, kEps);
  EXPECT_NEAR(s.itl.p99, 0.5, kEps);
  EXPECT_NEAR(s.itl.max, 0.5, kEps);

  // E2E sorted 0.2 0.2 1.1 2.0: mean 3.5/4 = 0.875; p50 r 1.5 -> 0.2 + 0.5*0.9 = 0.65;
  // p90 r 2.7 -> 1.1 + 0.7*0.9 = 1.73; p99 r 2.97 -> 1.1 + 0.97*0.9 = 1.973.
  EXPECT_EQ(s.e2e.count, 4);
  EXPECT_NEAR(s.e2e.mean, 0.875, kEps);
  EXPECT_NEAR(s.e2e.p50, 0.65, kEps);
  EXPECT_NEAR(s.e2e.p90, 1.73, kEps);
  EXPECT_NEAR(s.e2e.p99, 1.973, kEps);
  EXPECT_NEAR(s.e2e.max, 2.0, kEps);

  // SLO ttft <= 0.5, tpot <= 0.25: R1 (0.5, 0.2) good, R2 (0.1, 0.1) good, R3 (1.0) not,
  // R7 (0.2, no tpot) good.
  EXPECT_EQ(s.good, 3);
  EXPECT_NEAR(s.goodput, 3 / 4.0, kEps);

  // At t = 2.05 R1, R3 and R4 are in flight (R2 ended at 1.7); nothing later beats 3.
  EXPECT_EQ(s.peak_concurrency, 3);
}

TEST(SummarizeTest, GoodputPerLimit) {
  const std::vector<RequestRecord> run = HandMadeRun();
  EXPECT_EQ(Summarize(run, Slo{}).good, 4);  // no limits: every success is good
  Slo ttft_only;
  ttft_only.ttft_seconds = 0.15;  // only R2 (0.1)
  EXPECT_EQ(Summarize(run, ttft_only).good, 1);
  Slo tpot_only;
  tpot_only.tpot_seconds = 0.15;  // R2 (0.1) and R7 (no decode phase)
  EXPECT_EQ(Summarize(run, tpot_only).good, 2);
}

TEST(SummarizeTest, WarmupExcluded) {
  std::vector<RequestRecord> run = HandMadeRun();
  const Summary with = Summarize(run, Slo{});
  run[0].warmup = false;  // count the [0, 100] request
  const Summary without = Summarize(run, Slo{});
  EXPECT_EQ(with.completed, 4);
  EXPECT_EQ(without.completed, 5);
  EXPECT_NEAR(with.duration_seconds, 4.0, kEps);
  EXPECT_NEAR(without.duration_seconds, 100.0, kEps);
  EXPECT_EQ(with.peak_concurrency, 3);
  EXPECT_EQ(without.peak_concurrency, 4);
  EXPECT_EQ(with.prompt_tokens, 65);
  EXPECT_EQ(without.prompt_tokens, 1065);

  // Only warm-up records: nothing counted.
  const Summary only_warmup = Summarize({HandMadeRun()[0]}, Slo{});
  EXPECT_EQ(only_warmup.completed, 0);
  EXPECT_EQ(only_warmup.duration_seconds, 0);
  EXPECT_EQ(only_warmup.peak_concurrency, 0);
  EXPECT_EQ(only_warmup.ttft.count, 0);
}

TEST(SummarizeTest, BackToBackRequestsDoNotOverlap) {
  const Summary s = Summarize({Ok(0, 0, {0.5, 1.0}, 1), Ok(1, 1.0, {1.5, 2.0}, 1)}, Slo{});
  EXPECT_EQ(s.peak_concurrency, 1);
  EXPECT_NEAR(s.duration_seconds, 2.0, kEps);
}

TEST(SummarizeTest, AllFailed) {
  const Summary s = Summarize({Failed(0, 0, 1, "connect"), Failed(1, 0, 2, "connect")}, Slo{});
  EXPECT_EQ(s.completed, 0);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.errors_by_kind.at("connect"), 2);
  EXPECT_NEAR(s.duration_seconds, 2.0, kEps);
  EXPECT_EQ(s.request_throughput, 0);
  EXPECT_EQ(s.output_tokens, 0);
  EXPECT_EQ(s.peak_concurrency, 2);
}

TEST(FormatSummaryTest, ShowsTheNumbers) {
  Slo slo;
  slo.ttft_seconds = 0.5;
  slo.tpot_seconds = 0.25;
  const std::string text = FormatSummary(Summarize(HandMadeRun(), slo));
  EXPECT_NE(text.find("Serving Benchmark Result"), std::string::npos) << text;
  EXPECT_NE(text.find("Successful requests:"), std::string::npos) << text;
  EXPECT_NE(text.find("http_429:"), std::string::npos) << text;
  EXPECT_NE(text.find("timeout:"), std::string::npos) << text;
  EXPECT_NE(text.find("P99 TTFT (ms):"), std::string::npos) << text;
  EXPECT_NE(text.find("985.00"), std::string::npos) << text;   // p99 TTFT in ms
  EXPECT_NE(text.find("1973.00"), std::string::npos) << text;  // p99 E2E in ms
  EXPECT_NE(text.find("18.75"), std::string::npos) << text;    // total tok/s
}

}  // namespace
}  // namespace moe::client
