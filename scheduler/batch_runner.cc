#include "scheduler/batch_runner.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "scheduler/policy.h"
#include "scheduler/step_loop.h"

namespace moe {
namespace {

// Collects one request's events.
class Collector final : public EventSink {
 public:
  Collector(int index, Completion* out, absl::Status* error, const RunOptions& options)
      : index_(index), out_(out), error_(error), options_(options) {}
  void Push(StreamEvent e) override {
    if (options_.on_event) options_.on_event(index_, e);
    switch (e.kind) {
      case StreamEvent::Kind::kTokens:
        out_->tokens.insert(out_->tokens.end(), e.token_ids.begin(), e.token_ids.end());
        out_->text += e.text;
        break;
      case StreamEvent::Kind::kFinish:
        out_->reason = e.reason;
        out_->usage = e.usage;
        break;
      case StreamEvent::Kind::kError:
        if (error_->ok()) *error_ = e.error;
        break;
    }
  }

 private:
  const int index_;
  Completion* out_;
  absl::Status* error_;
  const RunOptions& options_;
};

// Splits steps into prefill and decode time for RunStats, then forwards to the caller's.
class StepTimer final : public ServingObserver {
 public:
  StepTimer(ServingObserver* next, RunStats* stats) : next_(next), stats_(stats) {}
  // A step that gave some request its first token prefilled that request's prompt.
  void OnStep(const Step& step) override {
    ++stats_->steps;
    if (first_tokens_ > 0) {
      stats_->prefill_tokens += step.num_tokens;
      stats_->prefill_seconds += step.seconds;
    } else {
      stats_->decode_tokens += step.num_tokens;
      stats_->decode_seconds += step.seconds;
    }
    first_tokens_ = 0;
    if (next_) next_->OnStep(step);
  }
  void OnFirstToken(double a, double b) override {
    ++first_tokens_;
    if (next_) next_->OnFirstToken(a, b);
  }
  void OnInterToken(double s) override {
    if (next_) next_->OnInterToken(s);
  }
  void OnFinish(StopReason r, const Usage& u, double s) override {
    if (next_) next_->OnFinish(r, u, s);
  }
  void OnPreemption() override {
    if (next_) next_->OnPreemption();
  }
  void OnError() override {
    if (next_) next_->OnError();
  }

 private:
  ServingObserver* next_;
  RunStats* stats_;
  int first_tokens_ = 0;  // in the step under way
};

}  // namespace

absl::StatusOr<std::vector<Completion>> RunToCompletion(const LoadedModel& model,
                                                        std::span<const GenerateRequest> requests,
                                                        const RunOptions& options,
                                                        RunStats* stats) {
  const int n = static_cast<int>(requests.size());
  std::vector<Completion> results(n);
  if (n == 0) return results;
  // An SCMoE request is two rows (strong and weak): twice the blocks, the prompt tokens
  // and the sequence slots.
  int blocks = 0, prompt_tokens = 0, rows = 0;
  for (const GenerateRequest& r : requests) {
    const int k = r.self_contrast ? 2 : 1;
    blocks += k * sched::BlocksFor(static_cast<int>(r.prompt.size()) + std::max(r.max_tokens, 0),
                                   kKvBlockSize);
    prompt_tokens += k * static_cast<int>(r.prompt.size());
    rows += k;
  }
  MOE_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(model.model->backend(),
                                                   model.model->KvShape(std::max(blocks, 1))));
  RunStats local;
  StepTimer timer(options.observer, &local);
  StepLoopOptions lo;
  lo.max_batched_tokens =
      options.max_batched_tokens > 0 ? options.max_batched_tokens : std::max(prompt_tokens, 2);
  lo.max_seqs = std::max(rows, 2);
  lo.observer = &timer;
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<StepLoop> loop, StepLoop::Create(&model, std::move(kv), lo));
  absl::Status error;
  const SteadyTime now = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    GenerateRequest r = requests[i];
    if (absl::Status s = loop->Validate(r); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("request ", i, ": ", s.message()));
    }
    if (r.id.empty()) r.id = absl::StrCat("run-", i);
    loop->Add(std::move(r), std::make_shared<Collector>(i, &results[i], &error, options), now);
  }
  while (!loop->idle()) {
    const bool ran = loop->Step();
    if (!error.ok()) return error;
    if (!ran) return absl::InternalError("batch runner: a step scheduled nothing");
  }
  if (stats != nullptr) *stats = local;
  return results;
}

}  // namespace moe
