#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <mutex>
#include <sstream>
#include <vector>

namespace moe::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;

// Latency buckets from 1 ms to 60 s, roughly x2 apart.
const Histogram::BucketBoundaries kLatency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    30,   60};
const Histogram::BucketBoundaries kExpertsPerToken = {1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128};
const Histogram::BucketBoundaries kTokensPerStep = {1,   2,   4,   8,    16,   32,   64,
                                                    128, 256, 512, 1024, 2048, 4096, 8192};

}  // namespace

struct Metrics::Impl {
  prometheus::Registry registry;

  Gauge& running = BuildGauge()
                       .Name("moe_num_requests_running")
                       .Help("Requests in the running batch")
                       .Register(registry)
                       .Add({});
  Gauge& waiting = BuildGauge()
                       .Name("moe_num_requests_waiting")
                       .Help("Requests queued for admission (including preempted ones)")
                       .Register(registry)
                       .Add({});
  Gauge& kv_usage = BuildGauge()
                        .Name("moe_kv_cache_usage_ratio")
                        .Help("Fraction of KV cache blocks in use")
                        .Register(registry)
                        .Add({});
  Gauge& kv_capacity = BuildGauge()
                           .Name("moe_kv_cache_capacity_blocks")
                           .Help("KV cache blocks of 16 tokens in the pool (its size)")
                           .Register(registry)
                           .Add({});
  Gauge& kv_used = BuildGauge()
                       .Name("moe_kv_cache_used_blocks")
                       .Help("KV cache blocks held by sequences")
                       .Register(registry)
                       .Add({});
  Counter& prompt_tokens = BuildCounter()
                               .Name("moe_prompt_tokens_total")
                               .Help("Prompt tokens of finished requests")
                               .Register(registry)
                               .Add({});
  Counter& generation_tokens = BuildCounter()
                                   .Name("moe_generation_tokens_total")
                                   .Help("Generated tokens of finished requests")
                                   .Register(registry)
                                   .Add({});
  prometheus::Family<Counter>& finished_family = BuildCounter()
                                                     .Name("moe_requests_finished_total")
                                                     .Help("Finished requests by finish reason")
                                                     .Register(registry);
  Counter& finished_stop = finished_family.Add({{"reason", "stop"}});
  Counter& finished_length = finished_family.Add({{"reason", "length"}});
  Counter& finished_abort = finished_family.Add({{"reason", "abort"}});
  Counter& errors = BuildCounter()
                        .Name("moe_request_errors_total")
                        .Help("Requests that failed after they were accepted")
                        .Register(registry)
                        .Add({});
  // Requests served with an option (DESIGN.md section 6), counted when they end.
  prometheus::Family<Counter>& options_family =
      BuildCounter()
          .Name("moe_requests_with_option_total")
          .Help("Requests served with a per-request routing override or SCMoE self-contrast")
          .Register(registry);
  Counter& served_routing = options_family.Add({{"option", "routing"}});
  Counter& served_self_contrast = options_family.Add({{"option", "self_contrast"}});
  Counter& preemptions = BuildCounter()
                             .Name("moe_preemptions_total")
                             .Help("Sequences preempted for lack of KV cache blocks")
                             .Register(registry)
                             .Add({});
  // Weights by placement (DESIGN.md section 5): resident in the compute device's memory, or
  // streamed through the offload ring. The CPU backend keeps every weight resident.
  prometheus::Family<Gauge>& weight_family =
      BuildGauge()
          .Name("moe_weight_bytes")
          .Help("Bytes of model weights by placement (resident or streamed)")
          .Register(registry);
  Gauge& weight_resident = weight_family.Add({{"placement", "resident"}});
  Gauge& weight_streamed = weight_family.Add({{"placement", "streamed"}});
  // What runs the model: the backend, its kernels (the CPU's instruction set) and the
  // weights' dtype, as labels of a gauge that is 1.
  prometheus::Family<Gauge>& backend_family =
      BuildGauge()
          .Name("moe_backend_info")
          .Help("The backend, kernel path and weight dtype serving the model (value 1)")
          .Register(registry);
  Gauge& peak_rss = BuildGauge()
                        .Name("moe_peak_rss_bytes")
                        .Help("Peak resident set size of the process after loading the model")
                        .Register(registry)
                        .Add({});
  // What the steps touched (ForwardOutput): a roofline reads these against the machine's
  // bandwidth and FLOP rate.
  Counter& step_weight_bytes = BuildCounter()
                                   .Name("moe_step_weight_bytes_total")
                                   .Help(
                                       "Weight bytes read by forward steps (each expert with "
                                       "rows counted once per step)")
                                   .Register(registry)
                                   .Add({});
  Counter& step_kv_bytes = BuildCounter()
                               .Name("moe_step_kv_bytes_total")
                               .Help("KV cache bytes read by attention in forward steps")
                               .Register(registry)
                               .Add({});
  Counter& step_flops = BuildCounter()
                            .Name("moe_step_flops_total")
                            .Help("Floating-point operations of forward steps")
                            .Register(registry)
                            .Add({});
  // Offload ring traffic. No backend streams weights yet, so these stay 0 while
  // moe_weight_bytes{placement="streamed"} is 0; the dashboard's offload panel reads them.
  Counter& offload_bytes = BuildCounter()
                               .Name("moe_offload_bytes_total")
                               .Help("Bytes of streamed expert weights copied to the device")
                               .Register(registry)
                               .Add({});
  Counter& offload_stall = BuildCounter()
                               .Name("moe_offload_stall_seconds_total")
                               .Help("Seconds compute waited for streamed weights to arrive")
                               .Register(registry)
                               .Add({});
  Histogram& ttft = BuildHistogram()
                        .Name("moe_time_to_first_token_seconds")
                        .Help("Submit to first token")
                        .Register(registry)
                        .Add({}, kLatency);
  Histogram& itl = BuildHistogram()
                       .Name("moe_inter_token_latency_seconds")
                       .Help("Time between consecutive tokens of a request")
                       .Register(registry)
                       .Add({}, kLatency);
  Histogram& e2e = BuildHistogram()
                       .Name("moe_e2e_request_latency_seconds")
                       .Help("Submit to finish")
                       .Register(registry)
                       .Add({}, kLatency);
  Histogram& queue = BuildHistogram()
                         .Name("moe_request_queue_time_seconds")
                         .Help("Submit to first scheduled step")
                         .Register(registry)
                         .Add({}, kLatency);
  Histogram& step_time = BuildHistogram()
                             .Name("moe_step_duration_seconds")
                             .Help("Duration of one engine step (forward and sampling)")
                             .Register(registry)
                             .Add({}, kLatency);
  Histogram& step_tokens = BuildHistogram()
                               .Name("moe_tokens_per_step")
                               .Help("Tokens in one step's flat batch")
                               .Register(registry)
                               .Add({}, kTokensPerStep);
  Histogram& experts_per_token = BuildHistogram()
                                     .Name("moe_experts_per_token")
                                     .Help("Routed experts one token used in one MoE layer")
                                     .Register(registry)
                                     .Add({}, kExpertsPerToken);
  prometheus::Family<Counter>& expert_family =
      BuildCounter()
          .Name("moe_expert_tokens_total")
          .Help("Tokens routed to each expert of each MoE layer")
          .Register(registry);
  prometheus::Family<Gauge>& imbalance_family =
      BuildGauge()
          .Name("moe_expert_load_imbalance")
          .Help("Max over mean of the tokens per expert in a layer, in the last step")
          .Register(registry);
  // [layer * E + expert], created on the first step (engine thread only).
  std::vector<Counter*> expert_tokens;
  std::vector<Gauge*> imbalance;  // [layer]

  std::mutex scrape_mu;
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

std::string Metrics::Scrape(const ServingStatus& status) {
  std::lock_guard<std::mutex> lock(impl_->scrape_mu);
  impl_->running.Set(status.running);
  impl_->waiting.Set(status.waiting);
  impl_->kv_capacity.Set(status.kv_blocks_total);
  impl_->kv_used.Set(status.kv_blocks_used);
  impl_->kv_usage.Set(status.kv_blocks_total > 0
                          ? static_cast<double>(status.kv_blocks_used) / status.kv_blocks_total
                          : 0.0);
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->registry.Collect());
  return out.str();
}

void Metrics::OnStep(const Step& step) {
  Impl& m = *impl_;
  m.step_time.Observe(step.seconds);
  m.step_tokens.Observe(step.num_tokens);
  m.step_weight_bytes.Increment(static_cast<double>(step.weight_bytes));
  m.step_kv_bytes.Increment(static_cast<double>(step.kv_bytes));
  m.step_flops.Increment(static_cast<double>(step.flops));
  if (step.experts_per_token != nullptr) {
    // The step's exact counts as bucket increments: bucket b holds n <= bound[b].
    std::vector<double> buckets(kExpertsPerToken.size() + 1, 0.0);
    double sum = 0;
    for (int n = 1; n <= step.num_experts; ++n) {
      const int64_t c = step.experts_per_token[n];
      if (c == 0) continue;
      const size_t b = std::lower_bound(kExpertsPerToken.begin(), kExpertsPerToken.end(), n) -
                       kExpertsPerToken.begin();
      buckets[b] += static_cast<double>(c);
      sum += static_cast<double>(c) * n;
    }
    if (sum > 0) m.experts_per_token.ObserveMultiple(buckets, sum);
  }
  if (step.expert_tokens == nullptr) return;
  if (m.expert_tokens.empty()) {
    for (int l = 0; l < step.num_layers; ++l) {
      const std::string layer = std::to_string(l);
      m.imbalance.push_back(&m.imbalance_family.Add({{"layer", layer}}));
      for (int e = 0; e < step.num_experts; ++e) {
        m.expert_tokens.push_back(
            &m.expert_family.Add({{"layer", layer}, {"expert", std::to_string(e)}}));
      }
    }
  }
  for (int l = 0; l < step.num_layers; ++l) {
    const int32_t* counts = step.expert_tokens + static_cast<size_t>(l) * step.num_experts;
    int64_t sum = 0;
    int32_t max = 0;
    for (int e = 0; e < step.num_experts; ++e) {
      if (counts[e] > 0) m.expert_tokens[l * step.num_experts + e]->Increment(counts[e]);
      sum += counts[e];
      max = std::max(max, counts[e]);
    }
    // Dense layers route nothing: leave their gauge alone.
    if (sum > 0) m.imbalance[l]->Set(static_cast<double>(max) * step.num_experts / sum);
  }
}

void Metrics::SetWeightBytes(int64_t resident, int64_t streamed) {
  impl_->weight_resident.Set(static_cast<double>(resident));
  impl_->weight_streamed.Set(static_cast<double>(streamed));
}

void Metrics::SetBackendInfo(const std::string& backend, const std::string& kernels,
                             const std::string& weight_dtype) {
  impl_->backend_family
      .Add({{"backend", backend}, {"kernels", kernels}, {"weight_dtype", weight_dtype}})
      .Set(1);
}

void Metrics::SetPeakRss(int64_t bytes) { impl_->peak_rss.Set(static_cast<double>(bytes)); }

void Metrics::OnFirstToken(double ttft_seconds, double queue_seconds) {
  impl_->ttft.Observe(ttft_seconds);
  impl_->queue.Observe(queue_seconds);
}

void Metrics::OnInterToken(double seconds) { impl_->itl.Observe(seconds); }

void Metrics::OnFinish(StopReason reason, const Usage& usage, double e2e_seconds) {
  Impl& m = *impl_;
  m.prompt_tokens.Increment(usage.prompt_tokens);
  m.generation_tokens.Increment(usage.completion_tokens);
  m.e2e.Observe(e2e_seconds);
  switch (reason) {
    case StopReason::kStop:
      m.finished_stop.Increment();
      break;
    case StopReason::kLength:
      m.finished_length.Increment();
      break;
    case StopReason::kAbort:
      m.finished_abort.Increment();
      break;
  }
}

void Metrics::OnServedOptions(const Options& options) {
  if (options.routing_override) impl_->served_routing.Increment();
  if (options.self_contrast) impl_->served_self_contrast.Increment();
}

void Metrics::OnPreemption() { impl_->preemptions.Increment(); }
void Metrics::OnError() { impl_->errors.Increment(); }

}  // namespace moe::server
