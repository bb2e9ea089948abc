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
#include "scheduler/kv_lease.h"
#include "scheduler/policy.h"
#include "scheduler/stop_strings.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class Stream final : public RequestStream {
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

  bool cancelled() const { return cancelled_.load(); }

  // ServingEngine thread only.
  void Push(StreamEvent e) {
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

// One request on the engine thread.
struct Sequence {
  Sequence(GenerateRequest r, std::shared_ptr<Stream> s, KvBlockPool* kv, const Tokenizer& tok)
      : req(std::move(r)),
        stream(std::move(s)),
        tokens(req.prompt),
        prompt_len(static_cast<int>(req.prompt.size())),
        lease(kv),
        sampler(req.sampling),
        decoder(tok, req.skip_special_tokens),
        stops(req.stop) {}

  int64_t seq_id = 0;
  GenerateRequest req;
  std::shared_ptr<Stream> stream;
  std::vector<int32_t> tokens;  // prompt + generated
  int prompt_len;
  int num_computed = 0;  // tokens in the KV cache
  sched::KvLease lease;
  Sampler sampler;
  IncrementalDecoder decoder;
  sched::StopStringMatcher stops;
  Clock::time_point submitted = Clock::now();
  std::optional<Clock::time_point> first_scheduled, first_token;
  Clock::time_point last_token;
  bool running = false;  // in running_ (else in waiting_)
  bool finished = false;

  int generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
  sched::SeqView View() const {
    return {seq_id, static_cast<int>(tokens.size()), num_computed, lease.num_blocks()};
  }
};

class ServingEngineImpl final : public ServingEngine {
 public:
  ServingEngineImpl(LoadedModel model, const ServingOptions& options, KvCache kv)
      : lm_(std::move(model)),
        options_(options),
        observer_(options_.observer.get()),
        kv_(std::move(kv)) {
    policy_.max_batched_tokens = options_.max_batched_tokens;
    policy_.max_seqs = options_.max_seqs;
    policy_.block_size = kv_.storage->shape().block_size;
    const int context = lm_.config.max_position_embeddings;
    max_prompt_ =
        options_.max_prompt_tokens > 0 ? std::min(options_.max_prompt_tokens, context) : context;
    max_tokens_cap_ = options_.max_tokens > 0 ? std::min(options_.max_tokens, context) : context;
    status_.kv_blocks_total = kv_.storage->shape().num_blocks;
    thread_ = std::thread([this] { Loop(); });
  }

  ~ServingEngineImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerateRequest request,
                                                        std::function<void()> on_event) override {
    MOE_RETURN_IF_ERROR(Validate(request));
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
    auto seq =
        std::make_unique<Sequence>(std::move(request), stream, kv_.pool.get(), *lm_.tokenizer);
    seq->seq_id = next_seq_++;
    live_.insert(stream->id());
    ++queued_;
    inbox_.push_back(std::move(seq));
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
    return idle_cv_.wait_for(lock, timeout, [&] { return live_.empty(); });
  }

  const ModelConfig& config() const override { return lm_.config; }
  const Tokenizer& tokenizer() const override { return *lm_.tokenizer; }
  const std::string& model_dir() const override { return lm_.dir; }

 private:
  // The engine's own limits on top of ValidateGeneration (engine/generator.h).
  absl::Status Validate(const GenerateRequest& r) const {
    MOE_RETURN_IF_ERROR(ValidateGeneration(r.prompt, r.max_tokens, r.sampling, lm_.config));
    const int n = static_cast<int>(r.prompt.size());
    if (n > max_prompt_) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt has ", n, " tokens; the limit is ", max_prompt_));
    }
    if (r.max_tokens > max_tokens_cap_) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens ", r.max_tokens, " is above the limit of ", max_tokens_cap_));
    }
    const int blocks = sched::BlocksFor(n + r.max_tokens, policy_.block_size);
    if (blocks > kv_.storage->shape().num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request needs ", blocks, " KV cache blocks; the cache has ",
                       kv_.storage->shape().num_blocks, " (raise --kv-cache-bytes)"));
    }
    for (int32_t id : r.stop_token_ids) {
      if (id < 0 || id >= lm_.config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("stop token id ", id, " is outside the vocabulary"));
      }
    }
    return absl::OkStatus();
  }

  void Wake() { cv_.notify_all(); }

  // --- engine thread -------------------------------------------------------------------

  void Loop() {
    while (true) {
      std::set<std::string> aborts;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || !inbox_.empty() || !aborts_.empty() || !running_.empty() ||
                 !waiting_.empty();
        });
        if (stop_) break;
        for (auto& seq : inbox_) waiting_.push_back(std::move(seq));
        inbox_.clear();
        aborts.swap(aborts_);
      }
      Reap(aborts);
      Step();
      PublishStatus();
    }
    // Shutdown: every live request ends with kAbort.
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& seq : inbox_) waiting_.push_back(std::move(seq));
      inbox_.clear();
    }
    ForEachSequence([&](Sequence& seq) { Finish(seq, StopReason::kAbort, ""); });
  }

  // `f(Sequence&)` on every running, then every waiting sequence.
  template <typename F>
  void ForEachSequence(F&& f) {
    for (auto& seq : running_) f(*seq);
    for (auto& seq : waiting_) f(*seq);
  }

  // Cancelled, aborted and past-deadline requests end here, at a step boundary.
  void Reap(const std::set<std::string>& aborts) {
    const Clock::time_point now = Clock::now();
    auto doomed = [&](const Sequence& s) {
      return s.stream->cancelled() || aborts.count(s.stream->id()) != 0 ||
             (s.req.deadline.has_value() && now >= *s.req.deadline);
    };
    ForEachSequence([&](Sequence& seq) {
      if (doomed(seq)) Finish(seq, StopReason::kAbort, "");
    });
    EraseFinished();
  }

  void Step() {
    std::vector<sched::SeqView> running, waiting;
    for (const auto& s : running_) running.push_back(s->View());
    for (const auto& s : waiting_) waiting.push_back(s->View());
    const sched::StepPlan plan =
        sched::Schedule(running, waiting, kv_.pool->num_free_blocks(), policy_);

    for (int64_t id : plan.preempted) {  // most recent first
      auto it = std::find_if(running_.begin(), running_.end(),
                             [&](const auto& s) { return s->seq_id == id; });
      Sequence& seq = **it;
      seq.lease.Release();
      seq.num_computed = 0;  // recompute prompt + generated tokens later
      seq.running = false;
      waiting_.push_front(std::move(*it));
      running_.erase(it);
      ++preemptions_;
      if (observer_) observer_->OnPreemption();
      std::lock_guard<std::mutex> lock(mu_);
      ++queued_;
      --status_.running;
    }
    for (int64_t id : plan.admitted) {
      auto it = std::find_if(waiting_.begin(), waiting_.end(),
                             [&](const auto& s) { return s->seq_id == id; });
      (*it)->running = true;
      running_.push_back(std::move(*it));
      waiting_.erase(it);
      std::lock_guard<std::mutex> lock(mu_);
      --queued_;
      ++status_.running;
    }
    if (plan.items.empty()) return;

    Batch batch;
    std::vector<Sequence*> in_batch;
    const Clock::time_point now = Clock::now();
    for (const sched::PlanItem& item : plan.items) {
      Sequence* seq = Find(item.id);
      // The plan fits the pool: growing cannot fail.
      seq->lease.EnsureCapacity(seq->num_computed + item.num_new_tokens);
      if (!seq->first_scheduled) seq->first_scheduled = now;
      batch.AddSequence(
          std::span<const int32_t>(seq->tokens).subspan(seq->num_computed, item.num_new_tokens),
          seq->num_computed, seq->lease.data(), item.sample);
      in_batch.push_back(seq);
    }
    ForwardOutput out;
    const Clock::time_point step_start = Clock::now();
    absl::Status status = lm_.model->Forward(batch, *kv_.storage, &out);
    ++steps_;
    if (!status.ok()) {
      for (Sequence* seq : in_batch) Fail(*seq, status);
      if (observer_) observer_->OnError();
      EraseFinished();
      return;
    }
    for (size_t i = 0; i < in_batch.size(); ++i) {
      in_batch[i]->num_computed += plan.items[i].num_new_tokens;
    }
    const int V = lm_.config.vocab_size;
    for (size_t r = 0; r < out.rows_seq.size(); ++r) {
      Sequence& seq = *in_batch[out.rows_seq[r]];
      const int32_t token =
          seq.sampler.Sample(std::span<const float>(out.logits.data() + r * V, V));
      AddToken(seq, token);
    }
    if (observer_) {
      ServingObserver::Step step;
      step.seconds = Seconds(Clock::now() - step_start);
      step.num_tokens = batch.num_tokens();
      step.num_seqs = static_cast<int>(in_batch.size());
      step.num_layers = lm_.config.num_layers;
      step.num_experts = std::max(lm_.config.num_experts, 1);
      step.expert_tokens = out.expert_tokens.data();
      observer_->OnStep(step);
    }
    EraseFinished();
  }

  Sequence* Find(int64_t id) {
    for (auto& s : running_) {
      if (s->seq_id == id) return s.get();
    }
    return nullptr;
  }

  // Appends a sampled token, streams its text and applies the stop conditions.
  void AddToken(Sequence& seq, int32_t token) {
    seq.tokens.push_back(token);
    const Clock::time_point now = Clock::now();
    if (!seq.first_token) {
      seq.first_token = now;
      if (observer_) {
        observer_->OnFirstToken(Seconds(now - seq.submitted),
                                Seconds(seq.first_scheduled.value_or(now) - seq.submitted));
      }
    } else if (observer_) {
      observer_->OnInterToken(Seconds(now - seq.last_token));
    }
    seq.last_token = now;
    const auto& eos = lm_.config.eos_token_ids;
    const bool is_eos =
        !seq.req.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
    const bool is_stop_id = std::find(seq.req.stop_token_ids.begin(), seq.req.stop_token_ids.end(),
                                      token) != seq.req.stop_token_ids.end();
    StreamEvent e;
    e.kind = StreamEvent::Kind::kTokens;
    e.token_ids = {token};
    if (is_eos || is_stop_id) {
      // The stop token's own text is not part of the output.
      e.text = seq.stops.Push(seq.decoder.Flush()).text + seq.stops.Flush();
      seq.stream->Push(std::move(e));
      const int32_t ids[] = {token};
      Finish(seq, StopReason::kStop, lm_.tokenizer->Decode(ids, /*skip_special_tokens=*/false));
      return;
    }
    sched::StopStringMatcher::Result r = seq.stops.Push(seq.decoder.Push(token));
    if (r.matched) {
      e.text = std::move(r.text);
      seq.stream->Push(std::move(e));
      Finish(seq, StopReason::kStop, *r.matched);
      return;
    }
    e.text = std::move(r.text);
    if (seq.generated() >= seq.req.max_tokens) {
      sched::StopStringMatcher::Result tail = seq.stops.Push(seq.decoder.Flush());
      e.text += tail.text;
      if (tail.matched) {
        seq.stream->Push(std::move(e));
        Finish(seq, StopReason::kStop, *tail.matched);
        return;
      }
      e.text += seq.stops.Flush();
      seq.stream->Push(std::move(e));
      Finish(seq, StopReason::kLength, "");
      return;
    }
    seq.stream->Push(std::move(e));
  }

  void Finish(Sequence& seq, StopReason reason, std::string matched) {
    if (seq.finished) return;
    StreamEvent e;
    e.kind = StreamEvent::Kind::kFinish;
    e.reason = reason;
    e.matched_stop = std::move(matched);
    e.usage.prompt_tokens = seq.prompt_len;
    e.usage.completion_tokens = seq.generated();
    if (seq.first_scheduled) e.queue_seconds = Seconds(*seq.first_scheduled - seq.submitted);
    if (seq.first_token) e.ttft_seconds = Seconds(*seq.first_token - seq.submitted);
    if (observer_) observer_->OnFinish(reason, e.usage, Seconds(Clock::now() - seq.submitted));
    End(seq, std::move(e));
  }

  void Fail(Sequence& seq, const absl::Status& error) {
    StreamEvent e;
    e.kind = StreamEvent::Kind::kError;
    e.error = error;
    End(seq, std::move(e));
  }

  // Every exit of a request goes through here. The lease is returned and the counts that
  // Status() reports change before the last event is pushed, so a client that has its
  // final event and then asks Status() (or scrapes /metrics) never sees it running; the
  // id leaves live_ after the push, so WaitIdle() returns only once every stream ended.
  void End(Sequence& seq, StreamEvent last) {
    seq.finished = true;
    seq.lease.Release();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (seq.running) {
        --status_.running;
      } else {
        --queued_;
      }
      status_.kv_blocks_used = kv_.storage->shape().num_blocks - kv_.pool->num_free_blocks();
    }
    seq.stream->Push(std::move(last));
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(seq.stream->id());
    if (live_.empty()) idle_cv_.notify_all();
  }

  // Drops finished sequences from both queues (their leases are already released).
  void EraseFinished() {
    const auto gone = [](const std::unique_ptr<Sequence>& s) { return s->finished; };
    running_.erase(std::remove_if(running_.begin(), running_.end(), gone), running_.end());
    waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), gone), waiting_.end());
  }

  void PublishStatus() {
    std::lock_guard<std::mutex> lock(mu_);
    status_.kv_blocks_used = kv_.storage->shape().num_blocks - kv_.pool->num_free_blocks();
    status_.preemptions = preemptions_;
    status_.steps = steps_;
  }

  LoadedModel lm_;
  const ServingOptions options_;
  ServingObserver* const observer_;  // options_.observer, or nullptr
  KvCache kv_;
  sched::PolicyConfig policy_;
  int max_prompt_ = 0;
  int max_tokens_cap_ = 0;

  // Shared with front-end threads, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the engine thread
  std::condition_variable idle_cv_;  // live_ became empty
  std::deque<std::unique_ptr<Sequence>> inbox_;
  std::set<std::string> aborts_;
  std::set<std::string> live_;  // ids submitted and not finished
  int queued_ = 0;              // inbox + waiting
  bool draining_ = false;
  bool stop_ = false;
  int64_t next_id_ = 0;
  int64_t next_seq_ = 0;
  ServingStatus status_;

  // ServingEngine thread only.
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order
  std::deque<std::unique_ptr<Sequence>> waiting_;   // FCFS
  int64_t preemptions_ = 0;
  int64_t steps_ = 0;
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
  MOE_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(model.model->backend(),
                                                   model.model->KvShape(static_cast<int>(blocks))));
  return std::unique_ptr<ServingEngine>(
      new ServingEngineImpl(std::move(model), options, std::move(kv)));
}

}  // namespace moe
