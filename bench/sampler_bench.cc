// sampler_bench: the cost of drawing one token (engine/sampler.h) from a row of logits,
// by vocabulary size and sampling mode, against the time a moe-1b decode step takes at
// this machine's read bandwidth (313 MB of bf16 weights per batch-1 step, bench/RESULTS.md),
// measured in the same run.
//
//   build/bench/sampler_bench [--vocab 4096 151936] [--tokens 200] [--output FILE]
//
// The logits are a synthetic LM-head row: a normal spread (sd 2) with a few dozen
// plausible tokens well above it, the shape a trained model's next-token row has.
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
#include "engine/sampler.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Mode {
  const char* name;
  moe::SamplingParams params;
};

std::vector<float> SyntheticLogits(int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> spread(0.f, 2.f);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = spread(rng);
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::uniform_real_distribution<float> high(8.f, 14.f);
  for (int i = 0; i < 40; ++i) logits[pick(rng)] = high(rng);
  return logits;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sampler_bench: the cost of sampling one token against a moe-1b decode step"};
  std::vector<int> vocabs = {4096, 151936};
  int tokens = 200;
  std::string output;
  app.add_option("--vocab", vocabs, "Vocabulary sizes")->capture_default_str();
  app.add_option("--tokens", tokens, "Draws per mode and size (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--output", output, "Write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  const moe::bench::Bandwidth bw = moe::bench::ReadBandwidth();
  constexpr double kMoe1bStepBytes = 313.0e6;  // batch 1, bf16 (engine_bench)
  const double step_seconds = kMoe1bStepBytes / bw.sustained;
  std::printf("machine: %s\n", moe::bench::MachineDescription().c_str());
  std::printf(
      "read bandwidth %.1f GB/s sustained: a moe-1b batch-1 decode step at that rate "
      "= %.3f ms\n",
      bw.sustained / 1e9, step_seconds * 1e3);

  std::vector<Mode> modes(5);
  modes[0] = {"greedy", {}};
  modes[0].params.temperature = 0.f;
  modes[1] = {"temperature 0.8", {}};
  modes[1].params.temperature = 0.8f;
  modes[2] = {"top_k 50", {}};
  modes[2].params.temperature = 0.8f;
  modes[2].params.top_k = 50;
  modes[3] = {"top_p 0.9", {}};
  modes[3].params.temperature = 0.8f;
  modes[3].params.top_p = 0.9f;
  modes[4] = {"top_k 50 + top_p 0.9", {}};
  modes[4].params.temperature = 0.8f;
  modes[4].params.top_k = 50;
  modes[4].params.top_p = 0.9f;

  nlohmann::json results = nlohmann::json::array();
  std::printf("%8s  %-22s %12s %14s\n", "vocab", "mode", "us/token", "of moe-1b step");
  for (int vocab : vocabs) {
    // Different rows, so no draw is a cache-warm repeat of the last.
    std::vector<std::vector<float>> rows;
    for (int r = 0; r < 8; ++r) rows.push_back(SyntheticLogits(vocab, 100 + r));
    for (Mode& mode : modes) {
      mode.params.seed = 1;
      moe::Sampler sampler(mode.params);
      std::vector<double> times;
      int64_t checksum = 0;
      for (int t = 0; t < tokens; ++t) {
        const std::vector<float>& row = rows[t % rows.size()];
        const Clock::time_point start = Clock::now();
        checksum += sampler.Sample(row);
        times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
      }
      std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
      const double median = times[times.size() / 2];
      std::printf("%8d  %-22s %12.1f %13.2f%%\n", vocab, mode.name, median * 1e6,
                  100 * median / step_seconds);
      results.push_back({{"vocab", vocab},
                         {"mode", mode.name},
                         {"seconds_per_token", median},
                         {"fraction_of_moe1b_step", median / step_seconds},
                         {"checksum", checksum}});
    }
  }
  if (!output.empty()) {
    nlohmann::json doc = {{"machine", moe::bench::MachineDescription()},
                          {"read_bandwidth_sustained", bw.sustained},
                          {"moe1b_step_seconds_at_bandwidth", step_seconds},
                          {"results", results}};
    std::ofstream(output) << doc.dump(2) << "\n";
  }
  return 0;
}
