// SCMoE pairs and per-request routing at decode, one forward step at a time (issue 11):
//   pairs:  B SCMoE pairs (2B rows: strong, and weak with rank-r routing) against B plain
//           sequences, every sequence at the same context C: the ratio of the two step
//           times (target: <= 1.3 at B >= 16 and C <= 1024, the rows sharing the weight
//           reads), and where it passes 1.3 as C grows (the weak rows double the KV reads).
//   top_p:  B sequences routed with top_p P against the model's own top-k: experts per
//           token (MoE layers averaged) and decode tokens per second.
// Each step is Model::Forward of one decode token per row at position C over a KV cache
// of C positions per row (timing does not depend on what the cache holds). The
// configurations alternate, repeat --rounds times and report medians; every step's bytes
// (weights it touched, KV it read) are compared with the read bandwidth measured right
// before and after (bench/bounds.h). Prints a table and writes JSON (--output).
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

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Measured {
  double seconds = 0;       // median step time
  double bytes = 0;         // weights + KV one step read
  double experts_per_token = 0;
};

// Decode steps of `rows` rows at context `context`, each row routed by `route(r)`.
class StepRig {
 public:
  StepRig(moe::LoadedModel& lm, int max_rows, int context) : lm_(lm), context_(context) {
    const int per_row = context / moe::kKvBlockSize + 1;
    auto kv = moe::KvCache::Create(lm.model->backend(), lm.model->KvShape(per_row * max_rows));
    if (!kv.ok()) {
      std::fprintf(stderr, "scmoe_bench: %s\n", std::string(kv.status().message()).c_str());
      std::exit(1);
    }
    kv_ = std::move(*kv);
    tables_.resize(max_rows);
    for (auto& t : tables_) {
      if (!kv_.pool->EnsureCapacity(&t, context + 1)) std::exit(1);
    }
  }

  template <typename Route>
  Measured Step(int rows, Route route) {
    moe::Batch b;
    std::mt19937 rng(rows);
    std::uniform_int_distribution<int32_t> tok(1, lm_.config.vocab_size - 1);
    for (int r = 0; r < rows; ++r) {
      const int32_t t = tok(rng);
      b.AddSequence(std::span(&t, 1), context_, tables_[r].data(), true, route(r));
    }
    moe::ForwardOutput out;
    const double t0 = Now();
    if (absl::Status s = lm_.model->Forward(b, *kv_.storage, &out); !s.ok()) {
      std::fprintf(stderr, "scmoe_bench: %s\n", std::string(s.message()).c_str());
      std::exit(1);
    }
    Measured m;
    m.seconds = Now() - t0;
    m.bytes = static_cast<double>(out.weight_bytes + out.kv_bytes);
    double pairs = 0, experts = 0;
    for (size_t n = 0; n < out.experts_per_token.size(); ++n) {
      pairs += static_cast<double>(out.experts_per_token[n]);
      experts += static_cast<double>(out.experts_per_token[n]) * static_cast<double>(n);
    }
    m.experts_per_token = pairs > 0 ? experts / pairs : 0;
    return m;
  }

 private:
  moe::LoadedModel& lm_;
  int context_;
  moe::KvCache kv_;
  std::vector<std::vector<int32_t>> tables_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SCMoE pair and top-p routing decode step times against plain decoding"};
  std::string model_dir = moe::DefaultModelDir();
  std::vector<int> batches = {16, 64};
  std::vector<int> contexts = {256, 1024, 2048};
  int weak_rank = 2;
  float top_p = 0.4f;
  int rounds = 7;
  int threads = 0;
  std::string output;
  std::string only;
  app.add_option("--model", model_dir, "Model directory; default: the bundled default model");
  app.add_option("--batch", batches, "Batch sizes B (requests: B pairs against B plain)")
      ->delimiter(',');
  app.add_option("--context", contexts, "Contexts C (tokens before the decode token)")
      ->delimiter(',');
  app.add_option("--weak-rank", weak_rank, "The weak pass's expert rank")->capture_default_str();
  app.add_option("--top-p", top_p, "Routing threshold of the top-p runs")->capture_default_str();
  app.add_option("--rounds", rounds, "Steps per configuration (medians)")->capture_default_str();
  app.add_option("--threads", threads, "Kernel threads; 0: one per CPU");
  app.add_option("--output", output, "Write the results as JSON here");
  app.add_option("--only", only,
                 "plain or pairs: run only those steps, for MOE_PROFILE_OPS=1 per kind (the "
                 "other column and the ratio are then 0)")
      ->check(CLI::IsMember({"plain", "pairs"}));
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) moe::kernels::cpu::SetNumThreads(threads);

  absl::StatusOr<moe::LoadedModel> lm = moe::LoadModelDir(model_dir);
  if (!lm.ok()) {
    std::fprintf(stderr, "scmoe_bench: %s\n", std::string(lm.status().message()).c_str());
    return 1;
  }
  const int K = lm->config.top_k;
  std::string command;
  for (int i = 0; i < argc; ++i) command += std::string(i ? " " : "") + argv[i];
  std::printf("%s\nmachine: %s\nmodel: %s\n", command.c_str(),
              moe::bench::MachineDescription().c_str(), moe::LoadSummary(*lm).c_str());
  nlohmann::json result = {{"command", command},
                           {"machine", moe::bench::MachineDescription()},
                           {"model", lm->dir},
                           {"weak_rank", weak_rank},
                           {"top_p", top_p}};

  const moe::RoutingOverride plain{};
  moe::RoutingOverride weak;
  weak.weak_rank = weak_rank;
  moe::RoutingOverride nucleus;
  nucleus.top_p = top_p;
  const int max_b = *std::max_element(batches.begin(), batches.end());
  std::printf("\n%6s %6s | %10s %10s %6s %7s | %8s %8s | %s\n", "B", "C", "plain ms", "pairs ms",
              "ratio", "bytes x", "plain %", "pairs %",
              "(bytes x: pair over plain step bytes, the memory-bound ratio; %: of read "
              "bandwidth)");
  for (int C : contexts) {
    StepRig rig(*lm, 2 * max_b, C);
    for (int B : batches) {
      const double bw_before = moe::bench::ReadBandwidth(1.0).sustained;
      std::vector<double> tp, tq;
      Measured mp, mq;
      if (only.empty()) rig.Step(2 * B, [&](int) { return plain; });  // warm up
      for (int r = 0; r < rounds; ++r) {
        if (only != "pairs") {
          mp = rig.Step(B, [&](int) { return plain; });
          tp.push_back(mp.seconds);
        }
        if (only != "plain") {
          mq = rig.Step(2 * B, [&](int row) { return row % 2 == 0 ? plain : weak; });
          tq.push_back(mq.seconds);
        }
      }
      const double bw = std::max(bw_before, moe::bench::ReadBandwidth(1.0).sustained);
      const double p = Median(tp), q = Median(tq);
      std::printf("%6d %6d | %10.2f %10.2f %6.3f %7.3f | %7.1f%% %7.1f%%\n", B, C, 1e3 * p,
                  1e3 * q, p > 0 ? q / p : 0, mp.bytes > 0 ? mq.bytes / mp.bytes : 0, p > 0 ? 100 * mp.bytes / p / bw : 0,
                  q > 0 ? 100 * mq.bytes / q / bw : 0);
      result["pair_steps"].push_back({{"batch", B},
                                 {"context", C},
                                 {"plain_step_seconds", p},
                                 {"pair_step_seconds", q},
                                 {"ratio", p > 0 ? q / p : 0},
                                 {"plain_step_bytes", mp.bytes},
                                 {"pair_step_bytes", mq.bytes},
                                 {"read_bandwidth", bw}});
    }
  }

  if (!only.empty()) return 0;
  std::printf("\n%6s %6s | %10s %10s | %8s %8s | %10s %10s\n", "B", "C", "top-k ms", "top-p ms",
              "top-k", "top-p", "top-k tok/s", "top-p tok/s");
  const int C = contexts.front();
  StepRig rig(*lm, max_b, C);
  for (int B : batches) {
    std::vector<double> tk, tp;
    Measured mk, mp;
    rig.Step(B, [&](int) { return plain; });
    for (int r = 0; r < rounds; ++r) {
      mk = rig.Step(B, [&](int) { return plain; });
      tk.push_back(mk.seconds);
      mp = rig.Step(B, [&](int) { return nucleus; });
      tp.push_back(mp.seconds);
    }
    const double k = Median(tk), p = Median(tp);
    std::printf("%6d %6d | %10.2f %10.2f | %8.2f %8.2f | %10.1f %10.1f\n", B, C, 1e3 * k, 1e3 * p,
                mk.experts_per_token, mp.experts_per_token, B / k, B / p);
    result["top_p_steps"].push_back({{"batch", B},
                               {"context", C},
                               {"top_k", K},
                               {"top_k_step_seconds", k},
                               {"top_p_step_seconds", p},
                               {"top_k_experts_per_token", mk.experts_per_token},
                               {"top_p_experts_per_token", mp.experts_per_token},
                               {"top_k_tokens_per_second", B / k},
                               {"top_p_tokens_per_second", B / p}});
  }
  if (!output.empty()) std::ofstream(output) << result.dump(1) << "\n";
  return 0;
}
