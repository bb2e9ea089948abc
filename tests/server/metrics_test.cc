#include "server/metrics.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moe::server {
namespace {

using testing::HasSubstr;

TEST(MetricsTest, ObserverCallsShowUpInTheExposition) {
  Metrics m;
  // Two layers of four experts; layer 0 routes 6 tokens with a max of 3 -> 3 / 1.5 = 2.
  const std::vector<int32_t> routed = {3, 1, 1, 1, 0, 0, 0, 0};
  ServingObserver::Step step;
  step.seconds = 0.02;
  step.num_tokens = 3;
  step.num_seqs = 2;
  step.num_layers = 2;
  step.num_experts = 4;
  step.expert_tokens = routed.data();
  m.OnStep(step);
  m.OnFirstToken(0.3, 0.1);
  m.OnInterToken(0.004);
  m.OnFinish(StopReason::kStop, {5, 7}, 1.5);
  m.OnFinish(StopReason::kAbort, {2, 1}, 0.5);
  m.OnPreemption();
  ServingStatus status;
  status.running = 2;
  status.waiting = 3;
  status.kv_blocks_total = 10;
  status.kv_blocks_used = 4;
  const std::string text = m.Scrape(status);
  EXPECT_THAT(text, HasSubstr("moe_num_requests_running 2"));
  EXPECT_THAT(text, HasSubstr("moe_num_requests_waiting 3"));
  EXPECT_THAT(text, HasSubstr("moe_kv_cache_usage_ratio 0.4"));
  EXPECT_THAT(text, HasSubstr("moe_kv_cache_capacity_blocks 10"));
  EXPECT_THAT(text, HasSubstr("moe_kv_cache_used_blocks 4"));
  EXPECT_THAT(text, HasSubstr("moe_prompt_tokens_total 7"));
  EXPECT_THAT(text, HasSubstr("moe_generation_tokens_total 8"));
  EXPECT_THAT(text, HasSubstr("moe_requests_finished_total{reason=\"stop\"} 1"));
  EXPECT_THAT(text, HasSubstr("moe_requests_finished_total{reason=\"abort\"} 1"));
  EXPECT_THAT(text, HasSubstr("moe_requests_finished_total{reason=\"length\"} 0"));
  EXPECT_THAT(text, HasSubstr("moe_preemptions_total 1"));
  EXPECT_THAT(text, HasSubstr("moe_expert_tokens_total{expert=\"0\",layer=\"0\"} 3"));
  EXPECT_THAT(text, HasSubstr("moe_expert_load_imbalance{layer=\"0\"} 2"));
  EXPECT_THAT(text, HasSubstr("moe_time_to_first_token_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("moe_inter_token_latency_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("moe_e2e_request_latency_seconds_sum 2"));
  EXPECT_THAT(text, HasSubstr("moe_tokens_per_step_bucket{le=\"4\"} 1"));
  EXPECT_THAT(text, HasSubstr("# TYPE moe_step_duration_seconds histogram"));
}

}  // namespace
}  // namespace moe::server
