// The serving engine (DESIGN.md sections 2 and 4): one engine thread runs continuous
// batching over a paged KV cache; any thread submits requests and reads their events.
// Front ends (gRPC, HTTP) validate and tokenize on their own threads and only exchange
// these plain structs with the engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/generator.h"
#include "engine/sampler.h"

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

// The consumer side of one request. Thread-safe. Events arrive in order; kFinish or
// kError is the last one.
class RequestStream {
 public:
  virtual ~RequestStream() = default;
  virtual const std::string& id() const = 0;
  // Waits up to `timeout` for the next event; nullopt on timeout.
  virtual std::optional<StreamEvent> Next(std::chrono::milliseconds timeout) = 0;
  // The next event if one is ready.
  virtual std::optional<StreamEvent> TryNext() = 0;
  // Asks the engine to abort the request at its next step boundary (client cancel or
  // disconnect). Idempotent; a finish event with kAbort follows unless it already ended.
  virtual void Cancel() = 0;
};

// Hooks for metrics (server/metrics.h implements them with Prometheus). Called on the
// engine thread: they must be cheap and must not block or call back into the engine.
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
  };
  virtual void OnStep(const Step& /*step*/) {}
  // A request's first token: seconds since submit, and of those the time it waited.
  virtual void OnFirstToken(double /*ttft_seconds*/, double /*queue_seconds*/) {}
  // The time between two consecutive tokens of one request.
  virtual void OnInterToken(double /*seconds*/) {}
  // A request ended (not called for kError).
  virtual void OnFinish(StopReason /*reason*/, const Usage& /*usage*/, double /*e2e_seconds*/) {}
  virtual void OnPreemption() {}
  virtual void OnError() {}
};

struct ServingOptions {
  std::shared_ptr<ServingObserver> observer;  // optional
  int max_batched_tokens = 512;               // token budget of one step
  int max_seqs = 64;                          // running sequences at most
  int64_t kv_cache_bytes = 256ll << 20;       // KV pool size (16-token blocks)
  int max_queued = 1024;                      // waiting requests at most; more: RESOURCE_EXHAUSTED
  int max_prompt_tokens = 0;                  // 0: the model's context
  int max_tokens = 0;  // cap on a request's max_tokens; 0: the model's context
};

struct ServingStatus {
  int running = 0;
  int waiting = 0;
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  bool draining = false;
};

class ServingEngine {
 public:
  // Takes the loaded model and starts the engine thread.
  static absl::StatusOr<std::unique_ptr<ServingEngine>> Create(LoadedModel model,
                                                               const ServingOptions& options);
  virtual ~ServingEngine() = default;  // stops the thread; live requests end with kAbort

  // Validates and queues a request. `on_event` (optional) is called from the engine
  // thread after each event is queued, to wake an async front end; it must not block.
  // InvalidArgument: bad request (message says which field); ResourceExhausted: queue
  // full; Unavailable: draining or stopped; AlreadyExists: the id is live.
  virtual absl::StatusOr<std::shared_ptr<RequestStream>> Submit(
      GenerateRequest request, std::function<void()> on_event = nullptr) = 0;
  // Aborts a live request by id; false if none.
  virtual bool Abort(const std::string& id) = 0;
  virtual ServingStatus Status() const = 0;
  // Stops admitting (Submit -> Unavailable); running and waiting requests go on.
  virtual void Drain() = 0;
  // Blocks until no request is live or `timeout` passes; true if idle.
  virtual bool WaitIdle(std::chrono::milliseconds timeout) = 0;

  virtual const ModelConfig& config() const = 0;
  // Thread-safe: front ends encode and decode on their own threads.
  virtual const Tokenizer& tokenizer() const = 0;
  // The Hugging Face model directory it was loaded from (tokenizer_config.json, ...).
  virtual const std::string& model_dir() const = 0;
};

}  // namespace moe
