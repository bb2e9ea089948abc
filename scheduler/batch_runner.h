// Runs a fixed set of requests to completion on the calling thread, with the step loop
// of the serving engine (scheduler/step_loop.h): moe-generate, the golden tests and the
// engine benchmark run the very step code moe-server runs. The KV pool holds every request
// whole and the token budget admits every prompt in the first step, so prompts are
// prefilled together in one flat batch, then decoded one token each per step.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/loader.h"
#include "scheduler/observer.h"
#include "scheduler/request.h"

namespace moe {

struct Completion {
  std::vector<int32_t> tokens;  // generated ids (an EOS that stopped it included)
  std::string text;             // the streamed text
  StopReason reason = StopReason::kLength;
  Usage usage;
};

struct RunStats {
  int64_t prefill_tokens = 0;  // tokens of steps that finished some prompt's prefill
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;  // tokens of steps that only decoded
  double decode_seconds = 0;
  int steps = 0;
};

struct RunOptions {
  // 0: enough to prefill every prompt in one step.
  int max_batched_tokens = 0;
  ServingObserver* observer = nullptr;  // optional: every step, token and finish
  // Called for every event of request i, in order, as it streams.
  std::function<void(int request, const StreamEvent& event)> on_event;
};

// InvalidArgument (naming the request and the field) for a request the serving engine
// would refuse; the first error of a failed step otherwise.
absl::StatusOr<std::vector<Completion>> RunToCompletion(const LoadedModel& model,
                                                        std::span<const GenerateRequest> requests,
                                                        const RunOptions& options = {},
                                                        RunStats* stats = nullptr);

}  // namespace moe
