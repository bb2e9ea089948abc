// The engine alone, without a server, against the machine's own bounds measured in the
// same run (bench/bounds.h): the sustained read bandwidth, measured right before and
// right after each decode figure (the larger is the bound), and the large-GEMM FLOP rate
// of the model's weight dtype, measured before each figure.
//   load:    seconds, peak RSS against the checkpoint's tensor bytes.
//   prefill: one prompt of --prompt-tokens random ids in one step; its FLOPs (from the
//            forward pass's own count, attention included) per second against the GEMM rate.
//   decode:  --batch sequences decoding together through the serving engine's step loop
//            (scheduler/batch_runner.h), --decode-tokens steps; the bytes each step read
//            (weights it touched, every expert with rows counted once, plus KV) per second
//            against the read bandwidth, and the step time against its roofline: the larger
//            of bytes / bandwidth and FLOPs / GEMM rate, summed over the steps.
// Prints a table and writes JSON (--output) with the machine and the command.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bounds.h"
#include "engine/loader.h"
#include "kernels/cpu/parallel.h"
#include "scheduler/batch_runner.h"

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sums the decode steps (those that give no request its first token).
class DecodeMeter final : public moe::ServingObserver {
 public:
    void OnFirstToken(double, double) override { ++first_tokens_; }
  void OnStep(const Step& s) override {
    if (first_tokens_ == 0) {
      ++steps;
      seconds += s.seconds;
      tokens += s.num_tokens;
      bytes += static_cast<double>(s.weight_bytes + s.kv_bytes);
      weight_bytes += static_cast<double>(s.weight_bytes);
      flops += static_cast<double>(s.flops);
      per_step.push_back({static_cast<double>(s.weight_bytes + s.kv_bytes),
                          static_cast<double>(s.flops)});
    }
    first_tokens_ = 0;
  }
  int steps = 0;
  double seconds = 0, tokens = 0, bytes = 0, weight_bytes = 0, flops = 0;
  std::vector<std::pair<double, double>> per_step;  // (bytes, flops)

 private:
  int first_tokens_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"engine_bench: prefill and decode of a model against the machine's bounds"};
  std::string model_dir, dtype = "auto", output;
  int prompt_tokens = 512, decode_tokens = 32, threads = 0;
  std::vector<int> batches = {1, 8, 32};
  app.add_option("--model", model_dir, "Model directory; default: the bundled default model");
  app.add_option("--dtype", dtype, "auto, float32 or bfloat16")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "Prefill length")->capture_default_str();
  app.add_option("--decode-tokens", decode_tokens, "Decode steps per batch")->capture_default_str();
  app.add_option("--batch", batches, "Decode batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "Kernel threads; 0: one per CPU");
  app.add_option("--output", output, "Write the results as JSON here");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) moe::kernels::cpu::SetNumThreads(threads);

  moe::LoadOptions load;
  auto parsed = moe::ParseWeightDtype(dtype);
  if (!parsed.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(parsed.status().message()).c_str());
    return 1;
  }
  load.dtype = *parsed;
  auto lm = moe::LoadModelDir(model_dir.empty() ? moe::DefaultModelDir() : model_dir, load);
  if (!lm.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(lm.status().message()).c_str());
    return 1;
  }
  const moe::WeightStats& ws = lm->model->weights().stats();
  const double gemm_rate = moe::bench::GemmRate(ws.dtype);
  std::printf("machine: %s\nGEMM (%s, 2048^3): %.1f GFLOP/s\n",
              moe::bench::MachineDescription().c_str(), moe::kernels::DTypeName(ws.dtype),
              gemm_rate / 1e9);
  std::printf("model: %s\n", moe::LoadSummary(*lm).c_str());
  std::printf("load: %.2f s, peak RSS %.1f MiB = %.3fx the checkpoint's tensor bytes\n",
              lm->load_seconds, lm->peak_rss_bytes / 1048576.0,
              static_cast<double>(lm->peak_rss_bytes) / ws.checkpoint_bytes);
  nlohmann::json result = {
      {"command", [&] {
         std::string c;
         for (int i = 0; i < argc; ++i) c += std::string(i ? " " : "") + argv[i];
         return c;
       }()},
      {"machine", moe::bench::MachineDescription()},
      {"gemm_flops_per_second", gemm_rate},
      {"model", lm->dir},
      {"dtype", moe::kernels::DTypeName(ws.dtype)},
      {"parameters", ws.num_parameters},
      {"resident_bytes", ws.resident_bytes},
      {"checkpoint_bytes", ws.checkpoint_bytes},
      {"load_seconds", lm->load_seconds},
      {"peak_rss_bytes", lm->peak_rss_bytes}};

  // Prefill: one prompt in one step, best of three.
  moe::Model& model = *lm->model;
  const int V = lm->config.vocab_size;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(1, V - 1);
  if (prompt_tokens > 0) {
    std::vector<int32_t> prompt(prompt_tokens);
    for (int32_t& t : prompt) t = tok(rng);
    auto kv = moe::KvCache::Create(model.backend(), model.KvShape(prompt_tokens / 16 + 1));
    std::vector<int32_t> table;
    if (!kv.ok() || !kv->pool->EnsureCapacity(&table, prompt_tokens)) return 1;
    double best = 1e30;
    moe::ForwardOutput out;
    for (int r = 0; r < 3; ++r) {
      moe::Batch b;
      b.AddSequence(prompt, 0, table.data(), true);
      const double t0 = Now();
      if (!model.Forward(b, *kv->storage, &out).ok()) return 1;
      best = std::min(best, Now() - t0);
    }
    const double rate = out.flops / best;
    std::printf("prefill %d tokens: %.3f s = %.1f tok/s, %.1f GFLOP = %.1f GFLOP/s = %.1f%% of "
                "the GEMM rate\n",
                prompt_tokens, best, prompt_tokens / best, out.flops / 1e9, rate / 1e9,
                100 * rate / gemm_rate);
    result["prefill"] = {{"tokens", prompt_tokens},
                         {"seconds", best},
                         {"tokens_per_second", prompt_tokens / best},
                         {"flops", out.flops},
                         {"flops_per_second", rate},
                         {"fraction_of_gemm_rate", rate / gemm_rate}};
  }

  std::printf("%6s %10s %10s %10s %18s %8s %14s %8s\n", "batch", "tok/s", "MB/step", "GB/s",
              "bound GB/s (best)", "of BW", "roofline tok/s", "of roof");
  result["decode"] = nlohmann::json::array();
  for (int batch : batches) {
    std::vector<moe::GenerateRequest> reqs(batch);
    for (moe::GenerateRequest& r : reqs) {
      for (int i = 0; i < 8; ++i) r.prompt.push_back(tok(rng));
      r.max_tokens = decode_tokens + 1;
      r.sampling.temperature = 0.f;
      r.ignore_eos = true;
    }
    // The roofline is recomputed from the bound measured around the run (below).
    const moe::bench::Bandwidth before = moe::bench::ReadBandwidth();
    DecodeMeter meter;
    moe::RunOptions run;
    run.observer = &meter;
    auto done = moe::RunToCompletion(*lm, reqs, run);
    const moe::bench::Bandwidth after = moe::bench::ReadBandwidth();
    const double bandwidth = std::max(before.sustained, after.sustained);
    const double best_pass = std::max(before.best_pass, after.best_pass);
    if (!done.ok() || meter.steps == 0) {
      std::fprintf(stderr, "engine_bench: decode failed\n");
      return 1;
    }
    const double tps = meter.tokens / meter.seconds;
    const double gbs = meter.bytes / meter.seconds;
    double roofline_seconds = 0;
    for (const auto& [bytes, flops] : meter.per_step) {
      roofline_seconds += std::max(bytes / bandwidth, flops / gemm_rate);
    }
    const double roof_tps = meter.tokens / roofline_seconds;
    std::printf("%6d %10.1f %10.1f %10.1f %10.1f (%5.1f) %7.1f%% %14.1f %7.1f%%\n", batch, tps,
                meter.bytes / meter.steps / 1e6, gbs / 1e9, bandwidth / 1e9, best_pass / 1e9,
                100 * gbs / bandwidth, roof_tps, 100 * tps / roof_tps);
    result["decode"].push_back({{"batch", batch},
                                {"steps", meter.steps},
                                {"tokens_per_second", tps},
                                {"bytes_per_step", meter.bytes / meter.steps},
                                {"weight_bytes_per_step", meter.weight_bytes / meter.steps},
                                {"flops_per_step", meter.flops / meter.steps},
                                {"bytes_per_second", gbs},
                                {"read_bandwidth_sustained", bandwidth},
                                {"read_bandwidth_best_pass", best_pass},
                                {"fraction_of_read_bandwidth", gbs / bandwidth},
                                {"roofline_tokens_per_second", roof_tps},
                                {"fraction_of_roofline", tps / roof_tps}});
  }
  if (!output.empty()) std::ofstream(output) << result.dump(2) << "\n";
  return 0;
}
