// Prometheus metrics (prefix moe_) through prometheus-cpp: the engine reports through
// ServingObserver on its thread; gauges of the engine's state are refreshed at scrape.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "scheduler/serving_engine.h"

namespace moe::server {

class Metrics final : public ServingObserver {
 public:
  Metrics();
  ~Metrics() override;

  // The Prometheus text exposition format (version 0.0.4) of every metric, with the
  // gauges taken from `status` first. Thread-safe.
  std::string Scrape(const ServingStatus& status);

  // moe_weight_bytes{placement}: the loaded model's weight bytes held resident and
  // streamed through the offload ring. Set once after load.
  void SetWeightBytes(int64_t resident, int64_t streamed);
  // moe_backend_info{backend, kernels, weight_dtype} 1, e.g. ("cpu", "avx512", "bfloat16").
  void SetBackendInfo(const std::string& backend, const std::string& kernels,
                      const std::string& weight_dtype);
  // moe_peak_rss_bytes: VmHWM once the model is loaded and the KV pool allocated.
  void SetPeakRss(int64_t bytes);

  // ServingObserver
  void OnStep(const Step& step) override;
  void OnFirstToken(double ttft_seconds, double queue_seconds) override;
  void OnInterToken(double seconds) override;
  void OnFinish(StopReason reason, const Usage& usage, double e2e_seconds) override;
  void OnServedOptions(const Options& options) override;
  void OnPreemption() override;
  void OnError() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::server
