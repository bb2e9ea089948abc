// Hooks for metrics (server/metrics.h implements them with Prometheus). Called on the
// engine thread: they must be cheap and must not block or call back into the engine.
#pragma once

#include <cstdint>

#include "scheduler/request.h"

namespace moe {

class ServingObserver {
 public:
  virtual ~ServingObserver() = default;
  struct Step {
    double seconds = 0;  // the forward pass and sampling
    int num_tokens = 0;  // tokens in the flat batch
    int num_seqs = 0;
    int num_layers = 0;
    int num_experts = 0;
    const int32_t* expert_tokens = nullptr;  // [num_layers, num_experts] tokens routed
    // [num_experts + 1]: (token, MoE layer) pairs that used n experts (ForwardOutput).
    const int64_t* experts_per_token = nullptr;
    int64_t weight_bytes = 0;  // weights the step read (ForwardOutput)
    int64_t kv_bytes = 0;      // KV cache bytes attention read
    int64_t flops = 0;
  };
  virtual void OnStep(const Step& /*step*/) {}
  // A request's first token: seconds since submit, and of those the time it waited.
  virtual void OnFirstToken(double /*ttft_seconds*/, double /*queue_seconds*/) {}
  // The time between two consecutive tokens of one request.
  virtual void OnInterToken(double /*seconds*/) {}
  // A request ended (not called for kError).
  virtual void OnFinish(StopReason /*reason*/, const Usage& /*usage*/, double /*e2e_seconds*/) {}
  // Which options a request that ended (not with kError) was served with.
  struct Options {
    bool routing_override = false;  // GenerateRequest::routing
    bool self_contrast = false;     // an SCMoE pair
  };
  virtual void OnServedOptions(const Options& /*options*/) {}
  virtual void OnPreemption() {}
  virtual void OnError() {}
};

}  // namespace moe
