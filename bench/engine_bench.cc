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
// With --device cuda the bounds are not measured here (the probes read host memory):
// --bound-bandwidth and --bound-gemm give the device's copy bandwidth and bf16 GEMM rate
// that moe_gpu_bench measured in the same scripts/gpu_check.sh run.
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
      per_step.push_back(
          {static_cast<double>(s.weight_bytes + s.kv_bytes), static_cast<double>(s.flops)});
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
  int prompt_tokens = 512, decode_tokens = 32, threads = 0, num_rounds = 3;
  std::string probe_kind = "weights", device = "cpu";
  double bound_bandwidth_gbps = 0, bound_gemm_gflops = 0;
  std::vector<int> batches = {1, 8, 32};
  app.add_option("--model", model_dir, "Model directory; default: the bundled default model");
  app.add_option("--dtype", dtype, "auto, float32 or bfloat16")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "Prefill length")->capture_default_str();
  app.add_option("--decode-tokens", decode_tokens, "Decode steps per batch")->capture_default_str();
  app.add_option("--batch", batches, "Decode batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "Kernel threads; 0: one per CPU");
  app.add_option("--probe", probe_kind,
                 "Decode's bandwidth bound: weights (read the model's own weights) or fresh "
                 "(a fresh 1 GiB buffer)")
      ->capture_default_str();
  app.add_option("--rounds", num_rounds, "Decode runs per batch size (the median is reported)")
      ->capture_default_str();
  app.add_option("--output", output, "Write the results as JSON here");
  app.add_option("--device", device, "auto, cuda or cpu")->capture_default_str();
  app.add_option(
      "--bound-bandwidth", bound_bandwidth_gbps,
      "A device's bandwidth bound in GB/s, measured beside this run (needed off the CPU)");
  app.add_option("--bound-gemm", bound_gemm_gflops,
                 "A device's GEMM rate in GFLOP/s, measured beside this run (needed off the CPU)");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) moe::kernels::cpu::SetNumThreads(threads);

  moe::LoadOptions load;
  auto parsed = moe::ParseWeightDtype(dtype);
  if (!parsed.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(parsed.status().message()).c_str());
    return 1;
  }
  load.dtype = *parsed;
  load.device = device;
  auto lm = moe::LoadModelDir(model_dir.empty() ? moe::DefaultModelDir() : model_dir, load);
  if (!lm.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(lm.status().message()).c_str());
    return 1;
  }
  const moe::WeightStats& ws = lm->model->weights().stats();
  const bool on_host = lm->model->backend().compute_memory() != moe::MemoryKind::kDevice;
  if (!on_host && (bound_bandwidth_gbps <= 0 || bound_gemm_gflops <= 0)) {
    std::fprintf(stderr, "engine_bench: on %s, give --bound-bandwidth and --bound-gemm\n",
                 lm->model->backend().description().c_str());
    return 1;
  }
  const double gemm_rate = on_host ? moe::bench::GemmRate(ws.dtype) : bound_gemm_gflops * 1e9;
  std::printf("machine: %s; backend: %s\nGEMM (%s, %s): %.1f GFLOP/s\n",
              moe::bench::MachineDescription().c_str(), lm->model->backend().description().c_str(),
              moe::kernels::DTypeName(ws.dtype), on_host ? "2048^3, measured" : "given",
              gemm_rate / 1e9);
  std::printf("model: %s\n", moe::LoadSummary(*lm).c_str());
  std::printf("load: %.2f s, peak RSS %.1f MiB = %.3fx the checkpoint's tensor bytes\n",
              lm->load_seconds, lm->peak_rss_bytes / 1048576.0,
              static_cast<double>(lm->peak_rss_bytes) / ws.checkpoint_bytes);
  nlohmann::json result = {{"command",
                            [&] {
                              std::string c;
                              for (int i = 0; i < argc; ++i)
                                c += std::string(i ? " " : "") + argv[i];
                              return c;
                            }()},
                           {"machine", moe::bench::MachineDescription()},
                           {"backend", lm->model->backend().description()},
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
    std::printf(
        "prefill %d tokens: %.3f s = %.1f tok/s, %.1f GFLOP = %.1f GFLOP/s = %.1f%% of "
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

  std::printf("%6s %10s %10s %10s %18s %8s %14s %8s   %s\n", "batch", "tok/s", "MB/step", "GB/s",
              "bound GB/s (best)", "of BW", "roofline tok/s", "of roof", "[rounds' range]");
  // The bound of a decode step: the rate at which these threads read the model's own
  // weights (the memory the steps stream), or, with --probe fresh, a fresh 1 GiB buffer.
  std::vector<std::pair<const void*, size_t>> regions;
  {
    const moe::ModelWeights& w = model.weights();
    auto add = [&](const moe::Weight& x) {
      if (x) regions.push_back({x.ref.data, moe::kernels::MatrixBytes(x.ref)});
    };
    add(w.lm_head);
    for (const moe::LayerWeights& l : w.layers) {
      for (const moe::Weight* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.router, &l.shared_gate_up,
                                   &l.shared_down, &l.mlp_gate_up, &l.mlp_down}) {
        add(*x);
      }
      for (const moe::Weight& x : l.experts_gate_up) add(x);
      for (const moe::Weight& x : l.experts_down) add(x);
    }
  }
  auto probe = [&] {
    if (!on_host)
      return moe::bench::Bandwidth{bound_bandwidth_gbps * 1e9, bound_bandwidth_gbps * 1e9};
    return probe_kind == "fresh" ? moe::bench::ReadBandwidth(1.5)
                                 : moe::bench::ReadBandwidthOf(regions, 1.5);
  };
  if (on_host) {
    const moe::bench::Bandwidth weights_bw = moe::bench::ReadBandwidthOf(regions, 1.5);
    const moe::bench::Bandwidth fresh_bw = moe::bench::ReadBandwidth(1.5);
    std::printf(
        "read bandwidth, sustained (best pass): the model's weights %.1f (%.1f) GB/s, "
        "a fresh 1 GiB buffer %.1f (%.1f) GB/s\n",
        weights_bw.sustained / 1e9, weights_bw.best_pass / 1e9, fresh_bw.sustained / 1e9,
        fresh_bw.best_pass / 1e9);
    result["read_bandwidth_weights"] = weights_bw.sustained;
    result["read_bandwidth_fresh_buffer"] = fresh_bw.sustained;
  }
  result["decode_bound"] = probe_kind;
  result["decode"] = nlohmann::json::array();
  for (int batch : batches) {
    // --rounds runs, each between two bandwidth probes (shared with its neighbours); each
    // run is compared with the larger of its two probes. The median run by the fraction
    // of its roofline is reported, with the spread.
    struct Round {
      double tps, gbs, bandwidth, best_pass, roof_tps, bytes_per_step, weight_bytes_per_step,
          flops_per_step;
      int steps;
    };
    std::vector<Round> rounds;
    moe::bench::Bandwidth before = probe();
    for (int r = 0; r < num_rounds; ++r) {
      std::vector<moe::GenerateRequest> reqs(batch);
      for (moe::GenerateRequest& q : reqs) {
        for (int i = 0; i < 8; ++i) q.prompt.push_back(tok(rng));
        q.max_tokens = decode_tokens + 1;
        q.sampling.temperature = 0.f;
        q.ignore_eos = true;
      }
      DecodeMeter meter;
      moe::RunOptions run;
      run.observer = &meter;
      auto done = moe::RunToCompletion(*lm, reqs, run);
      const moe::bench::Bandwidth after = probe();
      if (!done.ok() || meter.steps == 0) {
        std::fprintf(stderr, "engine_bench: decode failed\n");
        return 1;
      }
      Round rd;
      rd.bandwidth = std::max(before.sustained, after.sustained);
      rd.best_pass = std::max(before.best_pass, after.best_pass);
      before = after;
      rd.tps = meter.tokens / meter.seconds;
      rd.gbs = meter.bytes / meter.seconds;
      double roofline_seconds = 0;
      for (const auto& [bytes, flops] : meter.per_step) {
        roofline_seconds += std::max(bytes / rd.bandwidth, flops / gemm_rate);
      }
      rd.roof_tps = meter.tokens / roofline_seconds;
      rd.steps = meter.steps;
      rd.bytes_per_step = meter.bytes / meter.steps;
      rd.weight_bytes_per_step = meter.weight_bytes / meter.steps;
      rd.flops_per_step = meter.flops / meter.steps;
      rounds.push_back(rd);
    }
    std::sort(rounds.begin(), rounds.end(), [](const Round& a, const Round& b) {
      return a.tps / a.roof_tps < b.tps / b.roof_tps;
    });
    const Round& m = rounds[rounds.size() / 2];
    std::printf(
        "%6d %10.1f %10.1f %10.1f %10.1f (%5.1f) %7.1f%% %14.1f %7.1f%%   [%.0f%%-%.0f%%]\n", batch,
        m.tps, m.bytes_per_step / 1e6, m.gbs / 1e9, m.bandwidth / 1e9, m.best_pass / 1e9,
        100 * m.gbs / m.bandwidth, m.roof_tps, 100 * m.tps / m.roof_tps,
        100 * rounds.front().tps / rounds.front().roof_tps,
        100 * rounds.back().tps / rounds.back().roof_tps);
    nlohmann::json all = nlohmann::json::array();
    for (const Round& r : rounds) {
      all.push_back({{"tokens_per_second", r.tps},
                     {"bytes_per_second", r.gbs},
                     {"read_bandwidth_sustained", r.bandwidth},
                     {"read_bandwidth_best_pass", r.best_pass},
                     {"fraction_of_read_bandwidth", r.gbs / r.bandwidth},
                     {"roofline_tokens_per_second", r.roof_tps},
                     {"fraction_of_roofline", r.tps / r.roof_tps}});
    }
    result["decode"].push_back({{"batch", batch},
                                {"steps", m.steps},
                                {"tokens_per_second", m.tps},
                                {"bytes_per_step", m.bytes_per_step},
                                {"weight_bytes_per_step", m.weight_bytes_per_step},
                                {"flops_per_step", m.flops_per_step},
                                {"bytes_per_second", m.gbs},
                                {"read_bandwidth_sustained", m.bandwidth},
                                {"read_bandwidth_best_pass", m.best_pass},
                                {"fraction_of_read_bandwidth", m.gbs / m.bandwidth},
                                {"roofline_tokens_per_second", m.roof_tps},
                                {"fraction_of_roofline", m.tps / m.roof_tps},
                                {"rounds", all}});
  }
  if (!output.empty()) std::ofstream(output) << result.dump(2) << "\n";
  return 0;
}
