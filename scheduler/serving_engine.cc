#include "scheduler/serving_engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "scheduler/step_loop.h"

namespace moe {
namespace {

class Stream final : public RequestStream, public EventSink {
 public:
  Stream(std::string id, std::function<void()> on_event, std::function<void()> wake_engine)
      : id_(std::move(id)), on_event_(std::move(on_event)), wake_engine_(std::move(wake_engine)) {}

  const std::string& id() const override { return id_; }

  std::optional<StreamEvent> Next(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
    StreamEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

  std::optional<StreamEvent> TryNext() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.empty()) return std::nullopt;
    StreamEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

  void Cancel() override {
    cancelled_.store(true);
    wake_engine_();
  }

  // EventSink, on the engine thread.
  bool cancelled() const override { return cancelled_.load(); }
  void Push(StreamEvent e) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
    if (on_event_) on_event_();
  }

 private:
  const std::string id_;
  const std::function<void()> on_event_;
  const std::function<void()> wake_engine_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
};

struct Submitted {
  GenerateRequest request;
  std::shared_ptr<Stream> stream;
  SteadyTime at;
};

class ServingEngineImpl final : public ServingEngine, private StepLoopListener {
 public:
  ServingEngineImpl(std::unique_ptr<LoadedModel> model, const ServingOptions& options)
      : lm_(std::move(model)), options_(options) {}

  // Creates the loop over the model this engine owns and starts the thread.
  absl::Status Start(KvCache kv) {
    StepLoopOptions lo;
    lo.max_batched_tokens = options_.max_batched_tokens;
    lo.max_seqs = options_.max_seqs;
    lo.max_prompt_tokens = options_.max_prompt_tokens;
    lo.max_tokens = options_.max_tokens;
    lo.default_max_tokens = options_.default_max_tokens;
    lo.observer = options_.observer.get();
    lo.listener = this;
    MOE_ASSIGN_OR_RETURN(loop_, StepLoop::Create(lm_.get(), std::move(kv), lo));
    status_.kv_blocks_total = loop_->kv_blocks_total();
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  ~ServingEngineImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerateRequest request,
                                                        std::function<void()> on_event) override {
    MOE_RETURN_IF_ERROR(loop_->Validate(request));
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || draining_) {
      return absl::UnavailableError("the server is draining and accepts no new requests");
    }
    if (queued_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request queue is full (", options_.max_queued, " waiting)"));
    }
    if (request.id.empty()) request.id = absl::StrCat("req-", next_id_++);
    if (live_.count(request.id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("request id '", request.id, "' is in use"));
    }
    auto stream = std::make_shared<Stream>(request.id, std::move(on_event), [this] { Wake(); });
    live_.insert(stream->id());
    ++queued_;
    inbox_.push_back({std::move(request), stream, std::chrono::steady_clock::now()});
    cv_.notify_all();
    return std::shared_ptr<RequestStream>(stream);
  }

  bool Abort(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_.count(id) == 0) return false;
    aborts_.insert(id);
    cv_.notify_all();
    return true;
  }

  ServingStatus Status() const override {
    std::lock_guard<std::mutex> lock(mu_);
    ServingStatus s = status_;
    s.waiting = queued_;
    s.draining = draining_;
    return s;
  }

  void Drain() override {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }

  bool WaitIdle(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    return idle_cv_.wait_for(lock, timeout, [&] { return live_.empty() && ending_ == 0; });
  }

  const ServingLimits& limits() const override { return loop_->limits(); }
  const ModelConfig& config() const override { return lm_->config; }
  const Tokenizer& tokenizer() const override { return *lm_->tokenizer; }
  const std::string& model_dir() const override { return lm_->dir; }

 private:
  void Wake() { cv_.notify_all(); }

  // --- engine thread -------------------------------------------------------------------

  void Loop() {
    while (true) {
      std::set<std::string> aborts;
      std::deque<Submitted> arrived;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock,
                 [&] { return stop_ || !inbox_.empty() || !aborts_.empty() || !loop_->idle(); });
        if (stop_) break;
        arrived.swap(inbox_);
        aborts.swap(aborts_);
      }
      for (Submitted& s : arrived) loop_->Add(std::move(s.request), std::move(s.stream), s.at);
      loop_->Reap(aborts);
      loop_->Step();
      PublishStatus();
    }
    // Shutdown: every live request ends with kAbort.
    std::deque<Submitted> arrived;
    {
      std::lock_guard<std::mutex> lock(mu_);
      arrived.swap(inbox_);
    }
    for (Submitted& s : arrived) loop_->Add(std::move(s.request), std::move(s.stream), s.at);
    loop_->AbortAll();
  }

  // StepLoopListener: the counts Status() reports follow the loop's state.
  void OnAdmitted() override {
    std::lock_guard<std::mutex> lock(mu_);
    --queued_;
    ++status_.running;
  }
  void OnPreempted() override {
    std::lock_guard<std::mutex> lock(mu_);
    ++queued_;
    --status_.running;
  }
  // The lease is back, the counts change and the id stops being live before the last
  // event is pushed, so a client that has its final event and then asks Status() (or
  // scrapes /metrics, or aborts the id) never finds it running; WaitIdle() also waits for
  // the pushes under way (ending_), so it returns only once every stream ended.
  void BeforeEnd(const std::string& id, bool was_running) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (was_running) {
      --status_.running;
    } else {
      --queued_;
    }
    status_.kv_blocks_used = loop_->kv_blocks_used();
    live_.erase(id);
    ++ending_;
  }
  void AfterEnd(const std::string&) override {
    std::lock_guard<std::mutex> lock(mu_);
    --ending_;
    if (live_.empty() && ending_ == 0) idle_cv_.notify_all();
  }

  void PublishStatus() {
    std::lock_guard<std::mutex> lock(mu_);
    status_.kv_blocks_used = loop_->kv_blocks_used();
    status_.preemptions = loop_->preemptions();
    status_.steps = loop_->steps();
  }

  const std::unique_ptr<LoadedModel> lm_;
  const ServingOptions options_;
  std::unique_ptr<StepLoop> loop_;  // engine thread only, after Start()

  // Shared with front-end threads, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the engine thread
  std::condition_variable idle_cv_;  // live_ became empty and no last event is in flight
  std::deque<Submitted> inbox_;
  std::set<std::string> aborts_;
  std::set<std::string> live_;  // ids submitted and not finished
  int ending_ = 0;              // requests whose last event is being pushed
  int queued_ = 0;              // inbox + waiting
  bool draining_ = false;
  bool stop_ = false;
  int64_t next_id_ = 0;
  ServingStatus status_;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ServingEngine>> ServingEngine::Create(
    LoadedModel model, const ServingOptions& options) {
  if (model.model == nullptr || model.tokenizer == nullptr) {
    return absl::InvalidArgumentError("ServingEngine::Create: the model is not loaded");
  }
  if (options.max_batched_tokens < 1 || options.max_seqs < 1 || options.max_queued < 1) {
    return absl::InvalidArgumentError(
        "max_batched_tokens, max_seqs and max_queued must be positive");
  }
  const KvCacheShape one = model.model->KvShape(1);
  const int64_t blocks = options.kv_cache_bytes / one.BytesPerBlock();
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                   " holds no KV block of ", one.BytesPerBlock(),
                                                   " bytes"));
  }
  auto lm = std::make_unique<LoadedModel>(std::move(model));
  MOE_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(lm->model->backend(),
                                                   lm->model->KvShape(static_cast<int>(blocks))));
  auto engine = std::make_unique<ServingEngineImpl>(std::move(lm), options);
  MOE_RETURN_IF_ERROR(engine->Start(std::move(kv)));
  return std::unique_ptr<ServingEngine>(std::move(engine));
}

}  // namespace moe
