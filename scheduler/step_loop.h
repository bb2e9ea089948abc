// The one step loop (DESIGN.md sections 2 and 4): the sequences of the live requests,
// the paged KV pool they lease blocks from, and Step(): schedule (scheduler/policy.h),
// run the model over one flat batch, sample, detokenize, apply stop conditions and stream
// each request's events to its sink. The threaded serving engine (serving_engine.h) and
// the synchronous runner behind moe-generate and the tests (batch_runner.h) both drive
// this code. Not thread-safe: one thread owns a StepLoop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/loader.h"
#include "scheduler/observer.h"
#include "scheduler/request.h"

namespace moe {

// Where one request's events go. Called on the step loop's thread.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Push(StreamEvent event) = 0;
  // True once the consumer asked to abort; the loop ends the request at the next Reap.
  virtual bool cancelled() const { return false; }
};

// State changes a driver mirrors (the serving engine's counts), on the loop's thread.
class StepLoopListener {
 public:
  virtual ~StepLoopListener() = default;
  virtual void OnAdmitted() {}   // a waiting sequence starts running
  virtual void OnPreempted() {}  // a running sequence goes back to waiting
  // A request ends: called before its last event is pushed (`was_running`: it was
  // running, else waiting), and after.
  virtual void BeforeEnd(const std::string& /*id*/, bool /*was_running*/) {}
  virtual void AfterEnd(const std::string& /*id*/) {}
};

struct StepLoopOptions {
  int max_batched_tokens = 512;  // token budget of one step
  int max_seqs = 64;             // running sequences at most
  int max_prompt_tokens = 0;     // 0: the model's context
  int max_tokens = 0;            // cap on a request's max_tokens; 0: the model's context
  int default_max_tokens = 16;   // published in ServingLimits for front ends
  ServingObserver* observer = nullptr;
  StepLoopListener* listener = nullptr;
};

class StepLoop {
 public:
  // `model` must outlive the loop. InvalidArgument for non-positive budgets.
  static absl::StatusOr<std::unique_ptr<StepLoop>> Create(const LoadedModel* model, KvCache kv,
                                                          const StepLoopOptions& options);
  ~StepLoop();

  const ServingLimits& limits() const;
  int kv_blocks_total() const;
  int kv_blocks_used() const;

  // The engine's checks on top of ValidateGeneration (engine/loader.h): prompt length,
  // the max_tokens cap, the KV pool's size, stop token ids. InvalidArgument naming the
  // field.
  absl::Status Validate(const GenerateRequest& request) const;
  // Queues a validated request; its events go to `sink`. `submitted` starts its clocks.
  void Add(GenerateRequest request, std::shared_ptr<EventSink> sink, SteadyTime submitted);

  // Ends with kAbort every request whose sink is cancelled, whose id is in `aborts`, or
  // whose deadline has passed.
  void Reap(const std::set<std::string>& aborts);
  // One step: schedule, forward, sample, stream. False when nothing was scheduled.
  bool Step();
  // Ends every live request with kAbort (shutdown).
  void AbortAll();

  bool idle() const;
  int num_running() const;
  int num_waiting() const;
  int64_t preemptions() const;
  int64_t steps() const;

 private:
  struct Impl;
  explicit StepLoop(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
