// moe-generate: load a Hugging Face MoE checkpoint, generate a continuation of one
// prompt with the serving engine's step loop (scheduler/batch_runner.h), print it as it
// streams and report prefill and decode speed.
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "base/cli_checks.h"
#include "engine/loader.h"
#include "scheduler/batch_runner.h"
#include "server/model_flags.h"

int main(int argc, char** argv) {
  CLI::App app{"moe-generate: generate text with a Mixture-of-Experts model"};
  moe::server::ModelFlags model_flags;
  std::string prompt = "Once upon a time";
  int max_tokens = 64;
  float temperature = 0.f;
  float top_p = 1.f;
  int top_k = 0;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  bool no_special = false;
  std::optional<int64_t> routing_top_k;
  std::optional<double> routing_top_p;
  bool self_contrast = false;
  moe::SelfContrastParams sc;
  moe::server::AddModelFlags(app, &model_flags);
  app.add_option("--prompt", prompt, "Prompt text")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "Tokens to generate at most")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  app.add_option("--temperature", temperature, "Sampling temperature; 0 is greedy")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<float>(0.f));
  app.add_option("--top-p", top_p, "Nucleus sampling mass in (0, 1]")
      ->capture_default_str()
      ->check(moe::cli::Between<float>(0.f, 1.f, /*lo_open=*/true));
  app.add_option("--top-k", top_k, "Keep the k most likely tokens; 0 keeps all")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(0));
  app.add_option("--seed", seed, "Random seed for sampling (default: random)");
  app.add_flag("--ignore-eos", ignore_eos, "Do not stop at end-of-sequence tokens");
  app.add_flag("--no-special-tokens", no_special,
               "Do not add the tokenizer's special tokens (e.g. BOS) to the prompt");
  auto* k = app.add_option("--routing-top-k", routing_top_k,
                           "Route every token to its N most probable experts in every MoE layer");
  app.add_option("--routing-top-p", routing_top_p,
                 "Route every token to the fewest experts whose router mass exceeds P")
      ->excludes(k);
  auto* contrast = app.add_flag("--self-contrast", self_contrast,
                                "SCMoE self-contrast decoding (a strong and a weak pass)");
  app.add_option("--scmoe-alpha", sc.alpha, "SCMoE plausibility cutoff, in (0, 1]")
      ->capture_default_str()
      ->needs(contrast);
  app.add_option("--scmoe-beta", sc.beta, "SCMoE contrast strength, >= 0")
      ->capture_default_str()
      ->needs(contrast);
  app.add_option("--scmoe-weak-rank", sc.weak_rank,
                 "SCMoE: the 1-based rank of the weak pass's one expert")
      ->capture_default_str()
      ->needs(contrast);
  app.add_flag("--scmoe-ban-eos", sc.ban_eos, "SCMoE: never choose an EOS token")->needs(contrast);
  CLI11_PARSE(app, argc, argv);

  auto loaded = moe::server::LoadModelFromFlags(model_flags);
  if (!loaded.ok()) {
    std::cerr << "moe-generate: " << loaded.status().message() << "\n";
    return 1;
  }
  std::cerr << "moe-generate: " << moe::LoadSummary(*loaded) << "\n";
  for (const std::string& warning : loaded->config.warnings) {
    std::cerr << "moe-generate: warning: " << warning << "\n";
  }
  auto ids = loaded->tokenizer->Encode(prompt, /*add_special_tokens=*/!no_special);
  if (!ids.ok()) {
    std::cerr << "moe-generate: " << ids.status().message() << "\n";
    return 1;
  }
  moe::GenerateRequest req;
  req.prompt = *ids;
  req.max_tokens = max_tokens;
  req.sampling.temperature = temperature;
  req.sampling.top_p = top_p;
  req.sampling.top_k = top_k;
  req.sampling.seed = seed;
  req.ignore_eos = ignore_eos;
  if (routing_top_k || routing_top_p) {
    absl::StatusOr<moe::RoutingOverride> routing =
        moe::RequestedRouting(routing_top_k, routing_top_p, loaded->config.num_experts);
    if (!routing.ok()) {
      std::cerr << "moe-generate: " << routing.status().message() << "\n";
      return 1;
    }
    req.routing = *routing;
  }
  if (self_contrast) req.self_contrast = sc;

  // The prompt is echoed with the first event, so a refused request prints only its error.
  bool echoed = false;
  moe::RunOptions run;
  run.on_event = [&](int, const moe::StreamEvent& e) {
    if (e.kind != moe::StreamEvent::Kind::kTokens) return;
    if (!echoed) std::cout << prompt;
    echoed = true;
    std::cout << e.text << std::flush;
  };
  moe::RunStats stats;
  auto results = moe::RunToCompletion(*loaded, std::span(&req, 1), run, &stats);
  if (!results.ok()) {
    std::cerr << "moe-generate: " << results.status().message() << "\n";
    return 1;
  }
  std::cout << "\n";
  const moe::Completion& r = (*results)[0];
  std::fprintf(stderr,
               "\n[%s] %zu prompt tokens, %zu generated (%s)\n"
               "prefill: %lld tokens in %.3f s = %.1f tokens/s\n"
               "decode:  %lld tokens in %.3f s = %.1f tokens/s\n",
               loaded->config.architecture.c_str(), req.prompt.size(), r.tokens.size(),
               r.reason == moe::StopReason::kStop ? "stop" : "length",
               static_cast<long long>(stats.prefill_tokens), stats.prefill_seconds,
               stats.prefill_seconds > 0 ? stats.prefill_tokens / stats.prefill_seconds : 0.0,
               static_cast<long long>(stats.decode_tokens), stats.decode_seconds,
               stats.decode_seconds > 0 ? stats.decode_tokens / stats.decode_seconds : 0.0);
  return 0;
}
