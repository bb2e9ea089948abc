#include "scheduler/step_loop.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/sampler.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"
#include "scheduler/kv_lease.h"
#include "scheduler/policy.h"
#include "scheduler/stop_strings.h"
#include "tokenizer/tokenizer.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One request on the loop's thread.
struct Sequence {
  Sequence(GenerateRequest r, std::shared_ptr<EventSink> s, KvBlockPool* pool, const Tokenizer& tok,
           SteadyTime submitted_at)
      : req(std::move(r)),
        sink(std::move(s)),
        tokens(req.prompt),
        prompt_len(static_cast<int>(req.prompt.size())),
        lease(pool),
        weak_lease(pool),
        sampler(ScoreSampling(req)),
        decoder(tok, req.skip_special_tokens),
        stops(req.stop),
        submitted(submitted_at) {}

  int64_t seq_id = 0;
  GenerateRequest req;
  std::shared_ptr<EventSink> sink;
  std::vector<int32_t> tokens;  // prompt + generated
  int prompt_len;
  int num_computed = 0;  // tokens in the KV cache
  sched::KvLease lease;
  // An SCMoE pair's weak sequence: the same tokens, its own KV cache (empty otherwise).
  sched::KvLease weak_lease;
  Sampler sampler;
  IncrementalDecoder decoder;
  sched::StopStringMatcher stops;
  SteadyTime submitted;
  std::optional<SteadyTime> first_scheduled, first_token;
  SteadyTime last_token;
  bool running = false;  // in running (else in waiting)
  bool finished = false;

  int generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
  bool pair() const { return req.self_contrast.has_value(); }
  sched::SeqView View() const {
    return {seq_id, static_cast<int>(tokens.size()), num_computed,
            lease.num_blocks() + weak_lease.num_blocks(), pair() ? 2 : 1};
  }
  void ReleaseBlocks() {
    lease.Release();
    weak_lease.Release();
  }

  // An SCMoE pair samples its combined scores, which already carry the temperature
  // (specs 1.2: no second division); top-k and top-p apply to them as they are.
  static SamplingParams ScoreSampling(const GenerateRequest& r) {
    SamplingParams p = r.sampling;
    if (r.self_contrast && !p.greedy()) p.temperature = 1.f;
    return p;
  }
};

}  // namespace

struct StepLoop::Impl {
  const LoadedModel* lm;
  KvCache kv;
  StepLoopOptions options;
  ServingLimits limits;
  sched::PolicyConfig policy;
  std::vector<std::unique_ptr<Sequence>> running;  // admission order
  std::deque<std::unique_ptr<Sequence>> waiting;   // FCFS
  int64_t next_seq = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  std::vector<int32_t> sampled;            // the step's tokens, by sampling job
  std::vector<std::vector<float>> scores;  // an SCMoE pair's combined row, by sampling job

  Sequence* Find(int64_t id) {
    for (auto& s : running) {
      if (s->seq_id == id) return s.get();
    }
    return nullptr;
  }

  template <typename F>
  void ForEachSequence(F&& f) {
    for (auto& seq : running) f(*seq);
    for (auto& seq : waiting) f(*seq);
  }

  void AddToken(Sequence& seq, int32_t token);
  void Finish(Sequence& seq, StopReason reason, std::string matched);
  void Fail(Sequence& seq, const absl::Status& error);
  void End(Sequence& seq, StreamEvent last);
  void EraseFinished();
};

absl::StatusOr<std::unique_ptr<StepLoop>> StepLoop::Create(const LoadedModel* model, KvCache kv,
                                                           const StepLoopOptions& options) {
  if (model == nullptr || model->model == nullptr || model->tokenizer == nullptr) {
    return absl::InvalidArgumentError("StepLoop: the model is not loaded");
  }
  if (options.max_batched_tokens < 1 || options.max_seqs < 1 || options.default_max_tokens < 1) {
    return absl::InvalidArgumentError(
        "max_batched_tokens, max_seqs and default_max_tokens must be positive");
  }
  auto impl = std::make_unique<Impl>();
  impl->lm = model;
  impl->kv = std::move(kv);
  impl->options = options;
  impl->policy.max_batched_tokens = options.max_batched_tokens;
  impl->policy.max_seqs = options.max_seqs;
  impl->policy.block_size = impl->kv.pool->block_size();
  const int context = model->config.max_position_embeddings;
  ServingLimits& l = impl->limits;
  l.context_length = context;
  l.max_prompt_tokens =
      options.max_prompt_tokens > 0 ? std::min(options.max_prompt_tokens, context) : context;
  l.max_tokens = options.max_tokens > 0 ? std::min(options.max_tokens, context) : context;
  l.default_max_tokens = std::min(options.default_max_tokens, l.max_tokens);
  l.vocab_size = model->config.vocab_size;
  l.num_routed_experts = model->config.num_experts;
  const ModelConfig& config = model->config;
  if (config.default_temperature) l.default_sampling.temperature = *config.default_temperature;
  if (config.default_top_p) l.default_sampling.top_p = *config.default_top_p;
  if (config.default_top_k) l.default_sampling.top_k = *config.default_top_k;
  return std::unique_ptr<StepLoop>(new StepLoop(std::move(impl)));
}

StepLoop::StepLoop(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepLoop::~StepLoop() = default;

const ServingLimits& StepLoop::limits() const { return impl_->limits; }
int StepLoop::kv_blocks_total() const { return impl_->kv.pool->num_blocks(); }
int StepLoop::kv_blocks_used() const {
  return impl_->kv.pool->num_blocks() - impl_->kv.pool->num_free_blocks();
}
bool StepLoop::idle() const { return impl_->running.empty() && impl_->waiting.empty(); }
int StepLoop::num_running() const { return static_cast<int>(impl_->running.size()); }
int StepLoop::num_waiting() const { return static_cast<int>(impl_->waiting.size()); }
int64_t StepLoop::preemptions() const { return impl_->preemptions; }
int64_t StepLoop::steps() const { return impl_->steps; }

absl::Status StepLoop::Validate(const GenerateRequest& r) const {
  const Impl& m = *impl_;
  MOE_RETURN_IF_ERROR(ValidateGeneration(r.prompt, r.max_tokens, r.sampling, m.lm->config));
  MOE_RETURN_IF_ERROR(ValidateRouting(r.routing, m.lm->config.num_experts));
  const int rows = r.self_contrast ? 2 : 1;
  if (r.self_contrast) {
    MOE_RETURN_IF_ERROR(r.self_contrast->Validate(m.lm->config.num_experts));
    if (m.policy.max_batched_tokens < 2 || m.policy.max_seqs < 2) {
      return absl::InvalidArgumentError(
          "self_contrast needs 2 rows of a step, and this server's --max-batched-tokens or "
          "--max-seqs is 1");
    }
  }
  const int n = static_cast<int>(r.prompt.size());
  if (n > m.limits.max_prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", n, " tokens; the limit is ", m.limits.max_prompt_tokens));
  }
  if (r.max_tokens > m.limits.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", r.max_tokens, " is above the limit of ", m.limits.max_tokens));
  }
  const int blocks = rows * sched::BlocksFor(n + r.max_tokens, m.policy.block_size);
  if (blocks > m.kv.pool->num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request needs ", blocks, " KV cache blocks",
                     rows == 2 ? " (a strong and a weak sequence)" : "", "; the cache has ",
                     m.kv.pool->num_blocks(), " (raise --kv-cache-bytes)"));
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= m.limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", id, " is outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

void StepLoop::Add(GenerateRequest request, std::shared_ptr<EventSink> sink, SteadyTime submitted) {
  Impl& m = *impl_;
  auto seq = std::make_unique<Sequence>(std::move(request), std::move(sink), m.kv.pool.get(),
                                        *m.lm->tokenizer, submitted);
  seq->seq_id = m.next_seq++;
  m.waiting.push_back(std::move(seq));
}

void StepLoop::Reap(const std::set<std::string>& aborts) {
  Impl& m = *impl_;
  const SteadyTime now = Clock::now();
  auto doomed = [&](const Sequence& s) {
    return s.sink->cancelled() || aborts.count(s.req.id) != 0 ||
           (s.req.deadline.has_value() && now >= *s.req.deadline);
  };
  m.ForEachSequence([&](Sequence& seq) {
    if (doomed(seq)) m.Finish(seq, StopReason::kAbort, "");
  });
  m.EraseFinished();
}

void StepLoop::AbortAll() {
  Impl& m = *impl_;
  m.ForEachSequence([&](Sequence& seq) { m.Finish(seq, StopReason::kAbort, ""); });
  m.EraseFinished();
}

bool StepLoop::Step() {
  Impl& m = *impl_;
  std::vector<sched::SeqView> running, waiting;
  for (const auto& s : m.running) running.push_back(s->View());
  for (const auto& s : m.waiting) waiting.push_back(s->View());
  const sched::StepPlan plan =
      sched::Schedule(running, waiting, m.kv.pool->num_free_blocks(), m.policy);

  for (int64_t id : plan.preempted) {  // most recent first
    auto it = std::find_if(m.running.begin(), m.running.end(),
                           [&](const auto& s) { return s->seq_id == id; });
    Sequence& seq = **it;
    seq.ReleaseBlocks();
    seq.num_computed = 0;  // recompute prompt + generated tokens later
    seq.running = false;
    m.waiting.push_front(std::move(*it));
    m.running.erase(it);
    ++m.preemptions;
    if (m.options.observer) m.options.observer->OnPreemption();
    if (m.options.listener) m.options.listener->OnPreempted();
  }
  for (int64_t id : plan.admitted) {
    auto it = std::find_if(m.waiting.begin(), m.waiting.end(),
                           [&](const auto& s) { return s->seq_id == id; });
    (*it)->running = true;
    m.running.push_back(std::move(*it));
    m.waiting.erase(it);
    if (m.options.listener) m.options.listener->OnAdmitted();
  }
  if (plan.items.empty()) return false;

  Batch batch;
  const bool sample_on_device = m.lm->model->backend().compute_memory() == MemoryKind::kDevice;
  std::vector<Sequence*> in_batch;  // by plan item
  std::vector<Sequence*> of_row;    // by batch sequence: an SCMoE pair has two
  const SteadyTime now = Clock::now();
  for (const sched::PlanItem& item : plan.items) {
    Sequence* seq = m.Find(item.id);
    const int upto = seq->num_computed + item.num_new_tokens;
    const std::span<const int32_t> chunk =
        std::span<const int32_t>(seq->tokens).subspan(seq->num_computed, item.num_new_tokens);
    // The plan fits the pool: growing cannot fail.
    seq->lease.EnsureCapacity(upto);
    if (!seq->first_scheduled) seq->first_scheduled = now;
    batch.AddSequence(chunk, seq->num_computed, seq->lease.data(), item.sample, seq->req.routing);
    // A greedy row needs only its argmax (computed on the backend); on a device the other
    // rows are drawn there too, with a uniform from the sequence's own stream, and an
    // SCMoE pair's rows are combined there first (its sampler's parameters are the
    // scores'). On the CPU a pair's rows come back as logits.
    BatchSequence& bs = batch.seqs.back();
    const SamplingParams& sp = seq->req.sampling;
    bs.greedy = sp.greedy() && !seq->pair();
    if (sample_on_device && item.sample && !bs.greedy) {
      const SamplingParams& drawn = seq->sampler.params();
      bs.backend_sample = {true, drawn.greedy() ? 0.f : drawn.temperature, drawn.top_k, drawn.top_p,
                           seq->sampler.NextUniform()};
      if (seq->pair()) {
        const SelfContrastParams& c = *seq->req.self_contrast;
        bs.backend_contrast = {true, sp.greedy() ? 0.f : sp.temperature, c.alpha, c.beta,
                               c.ban_eos};
      }
    }
    of_row.push_back(seq);
    if (seq->pair()) {
      // The weak sequence right after its strong one: same tokens, its own KV, rank-r
      // routing in every MoE layer.
      seq->weak_lease.EnsureCapacity(upto);
      RoutingOverride weak;
      weak.weak_rank = seq->req.self_contrast->weak_rank;
      batch.AddSequence(chunk, seq->num_computed, seq->weak_lease.data(), item.sample, weak);
      // Its row only feeds the combination on the backend; its own pick is discarded.
      batch.seqs.back().greedy = batch.seqs[batch.seqs.size() - 2].backend_contrast.on;
      of_row.push_back(seq);
    }
    in_batch.push_back(seq);
  }
  ForwardOutput out;
  const SteadyTime step_start = Clock::now();
  const absl::Status status = m.lm->model->Forward(batch, *m.kv.storage, &out);
  ++m.steps;
  if (!status.ok()) {
    for (Sequence* seq : in_batch) m.Fail(*seq, status);
    if (m.options.observer) m.options.observer->OnError();
    m.EraseFinished();
    return true;
  }
  for (size_t i = 0; i < in_batch.size(); ++i) {
    in_batch[i]->num_computed += plan.items[i].num_new_tokens;
  }
  // One sampling job per sequence that samples: its logits row, and for an SCMoE pair
  // the weak row right after it. Each sequence's sampler owns its random stream and
  // scratch, so jobs run on the kernel threads in any order and give what a lone draw
  // would.
  const int V = m.lm->config.vocab_size;
  struct Job {
    Sequence* seq;
    int row;
    const BatchSequence* in_batch;
  };
  std::vector<Job> jobs;
  for (int r = 0; r < static_cast<int>(out.rows_seq.size()); ++r) {
    Sequence* seq = of_row[out.rows_seq[r]];
    jobs.push_back({seq, r, &batch.seqs[out.rows_seq[r]]});
    if (seq->pair()) ++r;  // its weak row
  }
  const int num_jobs = static_cast<int>(jobs.size());
  m.sampled.resize(num_jobs);
  m.scores.resize(num_jobs);
  auto row = [&](int r) {
    return std::span<const float>(out.logits.data() + static_cast<int64_t>(r) * V, V);
  };
  kernels::cpu::ParallelTasks(num_jobs, [&](int j) {
    Sequence& seq = *jobs[j].seq;
    if (!out.tokens.empty()) {  // every row greedy or drawn on the backend
      m.sampled[j] = out.tokens[jobs[j].row];
      return;
    }
    if (const BatchSequence::BackendSample& b = jobs[j].in_batch->backend_sample; b.on) {
      // Meant for the backend, but the step brought logits back: the same combination and
      // draw with the backend ops' references, so the token does not depend on the batch.
      std::span<const float> scores = row(jobs[j].row);
      if (seq.pair()) {
        const SamplingParams& sp = seq.req.sampling;
        SelfContrastScores(row(jobs[j].row), row(jobs[j].row + 1),
                           sp.greedy() ? 0.f : sp.temperature, *seq.req.self_contrast,
                           m.lm->config.eos_token_ids, &m.scores[j]);
        scores = m.scores[j];
      }
      int32_t id = 0;
      const kernels::SampleParams draw{scores.data(),  1,        static_cast<int64_t>(V),
                                       &b.temperature, &b.top_k, &b.top_p,
                                       &b.uniform,     &id};
      kernels::cpu::Sample(draw);
      m.sampled[j] = id;
      return;
    }
    if (!seq.pair()) {
      m.sampled[j] = seq.sampler.Sample(row(jobs[j].row));
      return;
    }
    const SamplingParams& sp = seq.req.sampling;
    SelfContrastScores(row(jobs[j].row), row(jobs[j].row + 1), sp.greedy() ? 0.f : sp.temperature,
                       *seq.req.self_contrast, m.lm->config.eos_token_ids, &m.scores[j]);
    m.sampled[j] = seq.sampler.Sample(m.scores[j]);
  });
  for (int j = 0; j < num_jobs; ++j) m.AddToken(*jobs[j].seq, m.sampled[j]);
  if (m.options.observer) {
    ServingObserver::Step step;
    step.seconds = Seconds(Clock::now() - step_start);
    step.num_tokens = batch.num_tokens();
    step.num_seqs = static_cast<int>(batch.seqs.size());
    step.num_layers = m.lm->config.num_layers;
    step.num_experts = std::max(m.lm->config.num_experts, 1);
    step.expert_tokens = out.expert_tokens.data();
    step.experts_per_token = out.experts_per_token.data();
    step.weight_bytes = out.weight_bytes;
    step.kv_bytes = out.kv_bytes;
    step.flops = out.flops;
    m.options.observer->OnStep(step);
  }
  m.EraseFinished();
  return true;
}

// Appends a sampled token, streams its text and applies the stop conditions.
void StepLoop::Impl::AddToken(Sequence& seq, int32_t token) {
  seq.tokens.push_back(token);
  const SteadyTime now = Clock::now();
  ServingObserver* observer = options.observer;
  if (!seq.first_token) {
    seq.first_token = now;
    if (observer) {
      observer->OnFirstToken(Seconds(now - seq.submitted),
                             Seconds(seq.first_scheduled.value_or(now) - seq.submitted));
    }
  } else if (observer) {
    observer->OnInterToken(Seconds(now - seq.last_token));
  }
  seq.last_token = now;
  const auto& eos = lm->config.eos_token_ids;
  const bool is_eos = !seq.req.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
  const bool is_stop_id = std::find(seq.req.stop_token_ids.begin(), seq.req.stop_token_ids.end(),
                                    token) != seq.req.stop_token_ids.end();
  StreamEvent e;
  e.kind = StreamEvent::Kind::kTokens;
  e.token_ids = {token};
  if (is_eos || is_stop_id) {
    // The stop token's own text is not part of the output.
    e.text = seq.stops.Push(seq.decoder.Flush()).text + seq.stops.Flush();
    seq.sink->Push(std::move(e));
    const int32_t ids[] = {token};
    Finish(seq, StopReason::kStop, lm->tokenizer->Decode(ids, /*skip_special_tokens=*/false));
    return;
  }
  sched::StopStringMatcher::Result r = seq.stops.Push(seq.decoder.Push(token));
  if (r.matched) {
    e.text = std::move(r.text);
    seq.sink->Push(std::move(e));
    Finish(seq, StopReason::kStop, *r.matched);
    return;
  }
  e.text = std::move(r.text);
  if (seq.generated() >= seq.req.max_tokens) {
    sched::StopStringMatcher::Result tail = seq.stops.Push(seq.decoder.Flush());
    e.text += tail.text;
    if (tail.matched) {
      seq.sink->Push(std::move(e));
      Finish(seq, StopReason::kStop, *tail.matched);
      return;
    }
    e.text += seq.stops.Flush();
    seq.sink->Push(std::move(e));
    Finish(seq, StopReason::kLength, "");
    return;
  }
  seq.sink->Push(std::move(e));
}

void StepLoop::Impl::Finish(Sequence& seq, StopReason reason, std::string matched) {
  if (seq.finished) return;
  StreamEvent e;
  e.kind = StreamEvent::Kind::kFinish;
  e.reason = reason;
  e.matched_stop = std::move(matched);
  e.usage.prompt_tokens = seq.prompt_len;
  e.usage.completion_tokens = seq.generated();
  if (seq.first_scheduled) e.queue_seconds = Seconds(*seq.first_scheduled - seq.submitted);
  if (seq.first_token) e.ttft_seconds = Seconds(*seq.first_token - seq.submitted);
  if (options.observer) {
    options.observer->OnFinish(reason, e.usage, Seconds(Clock::now() - seq.submitted));
    ServingObserver::Options served;
    served.routing_override = seq.req.routing.any();
    served.self_contrast = seq.pair();
    if (served.routing_override || served.self_contrast) options.observer->OnServedOptions(served);
  }
  End(seq, std::move(e));
}

void StepLoop::Impl::Fail(Sequence& seq, const absl::Status& error) {
  StreamEvent e;
  e.kind = StreamEvent::Kind::kError;
  e.error = error;
  End(seq, std::move(e));
}

// Every exit of a request goes through here: the lease is returned and the listener told
// before the last event is pushed, so a driver's counts never show an ended request.
void StepLoop::Impl::End(Sequence& seq, StreamEvent last) {
  seq.finished = true;
  seq.ReleaseBlocks();
  if (options.listener) options.listener->BeforeEnd(seq.req.id, seq.running);
  seq.sink->Push(std::move(last));
  if (options.listener) options.listener->AfterEnd(seq.req.id);
}

// Drops finished sequences from both queues (their leases are already released).
void StepLoop::Impl::EraseFinished() {
  const auto gone = [](const std::unique_ptr<Sequence>& s) { return s->finished; };
  running.erase(std::remove_if(running.begin(), running.end(), gone), running.end());
  waiting.erase(std::remove_if(waiting.begin(), waiting.end(), gone), waiting.end());
}

}  // namespace moe
