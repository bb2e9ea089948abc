// The serving engine (DESIGN.md sections 2 and 4): one engine thread drives the step loop
// (scheduler/step_loop.h), continuous batching over a paged KV cache; any thread submits
// requests and reads their events. Front ends (gRPC, HTTP) validate and tokenize on their
// own threads against limits(), and only exchange the plain structs of
// scheduler/request.h with the engine.
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
#include "engine/loader.h"
#include "scheduler/observer.h"
#include "scheduler/request.h"

namespace moe {

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

struct ServingOptions {
  std::shared_ptr<ServingObserver> observer;  // optional
  int max_batched_tokens = 512;               // token budget of one step
  int max_seqs = 64;                          // running sequences at most
  int64_t kv_cache_bytes = 256ll << 20;       // KV pool size (16-token blocks)
  int max_queued = 1024;                      // waiting requests at most; more: RESOURCE_EXHAUSTED
  int max_prompt_tokens = 0;                  // 0: the model's context
  int max_tokens = 0;           // cap on a request's max_tokens; 0: the model's context
  int default_max_tokens = 16;  // a request that sets no max_tokens (OpenAI's default)
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

  // What requests may ask for; front ends check against it and fill defaults from it.
  virtual const ServingLimits& limits() const = 0;
  virtual const ModelConfig& config() const = 0;
  // Thread-safe: front ends encode and decode on their own threads.
  virtual const Tokenizer& tokenizer() const = 0;
  // The Hugging Face model directory it was loaded from (tokenizer_config.json, ...).
  virtual const std::string& model_dir() const = 0;
};

}  // namespace moe
