// The one request model of moe-serve: what a generation request asks for, the events it
// streams back, and the limits the engine publishes for front ends to check against.
// moe-generate, moe-server's gRPC and HTTP front ends and the tests all speak it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/batch.h"
#include "engine/sampler.h"
#include "engine/self_contrast.h"

namespace moe {

using SteadyTime = std::chrono::steady_clock::time_point;

struct GenerateRequest {
  std::string id;               // unique among live requests; empty: the engine assigns one
  std::vector<int32_t> prompt;  // token ids; not empty, each < vocab size
  int max_tokens = 16;          // >= 1; prompt + max_tokens <= the model's context
  SamplingParams sampling;
  std::vector<std::string> stop;        // stop strings; the text stops before the match
  std::vector<int32_t> stop_token_ids;  // extra stop ids (the matched id is not in the text)
  bool ignore_eos = false;              // do not stop on the model's EOS ids
  bool skip_special_tokens = true;      // in the streamed text
  std::optional<SteadyTime> deadline;   // aborted (reason kAbort) when passed
  // Per-request routing: top_k or top_p (ValidateRouting); weak_rank is never a request's.
  // With self_contrast it routes the strong pass only.
  RoutingOverride routing;
  // SCMoE self-contrast decoding (DESIGN.md section 6): the request runs as a pair of
  // sequences, strong and weak, and each token comes from their combined scores.
  std::optional<SelfContrastParams> self_contrast;
};

// Why a request ended.
enum class StopReason {
  kStop,    // EOS, a stop token id or a stop string
  kLength,  // max_tokens or the context
  kAbort,   // Abort(), Cancel(), a deadline, or shutdown
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

struct StreamEvent {
  enum class Kind { kTokens, kFinish, kError };
  Kind kind = Kind::kTokens;
  // kTokens: the new ids and the text they add (may be empty while a UTF-8 character or
  // a possible stop string is incomplete).
  std::vector<int32_t> token_ids;
  std::string text;
  // kFinish
  StopReason reason = StopReason::kLength;
  std::string matched_stop;  // the stop string, or the decoded stop token, that matched
  Usage usage;
  double queue_seconds = 0;  // submit -> first scheduled
  double ttft_seconds = 0;   // submit -> first token
  // kError: the request failed after it was accepted (e.g. a forward error). Final.
  absl::Status error;
};

// What the engine accepts, for front ends to validate and fill defaults against instead
// of keeping their own copies.
struct ServingLimits {
  int context_length = 0;       // prompt + max_tokens <= this (max_position_embeddings)
  int max_prompt_tokens = 0;    // longest prompt accepted
  int max_tokens = 0;           // largest max_tokens a request may ask for
  int default_max_tokens = 16;  // a request that does not say (clamped to the room left)
  int vocab_size = 0;           // token ids in [0, vocab_size)
  int num_routed_experts = 0;   // E: routing.top_k <= E; 0: the model has no MoE layers
  // What a request's unset temperature, top_p and top_k mean: the model's
  // generation_config.json defaults over SamplingParams' own (temperature 1, no top-p or
  // top-k filter). Never carries a seed.
  SamplingParams default_sampling;
};

}  // namespace moe
