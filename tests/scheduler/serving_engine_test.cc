// The serving engine on the default model: continuous batching gives the same greedy
// tokens as running each prompt alone (engine/generator.h), with chunked prefill and
// preemption; cancellations, aborts and deadlines free every KV block.
#include "scheduler/serving_engine.h"

#include "scheduler/batch_runner.h"
#include "scheduler/policy.h"

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moe {
namespace {

using std::chrono::milliseconds;
using testing::HasSubstr;

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  StreamEvent finish;
  bool errored = false;
};

Collected Drain(RequestStream& s) {
  Collected c;
  while (true) {
    std::optional<StreamEvent> e = s.Next(milliseconds(60000));
    if (!e) {
      ADD_FAILURE() << "no event within 60 s for " << s.id();
      return c;
    }
    if (e->kind == StreamEvent::Kind::kTokens) {
      c.tokens.insert(c.tokens.end(), e->token_ids.begin(), e->token_ids.end());
      c.text += e->text;
    } else {
      c.errored = e->kind == StreamEvent::Kind::kError;
      c.finish = std::move(*e);
      return c;
    }
  }
}

class EngineTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto lm = LoadModelDir(DefaultModelDir());
    ASSERT_TRUE(lm.ok()) << lm.status();
    reference_ = new LoadedModel(std::move(*lm));
  }
  static void TearDownTestSuite() {
    delete reference_;
    reference_ = nullptr;
  }

  std::unique_ptr<ServingEngine> MakeEngine(ServingOptions options = {}) {
    auto lm = LoadModelDir(DefaultModelDir());
    EXPECT_TRUE(lm.ok()) << lm.status();
    auto engine = ServingEngine::Create(std::move(*lm), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }

  std::vector<int32_t> Encode(const std::string& text) {
    auto ids = reference_->tokenizer->Encode(text, true);
    EXPECT_TRUE(ids.ok());
    return *ids;
  }

  // Greedy tokens of `prompt` run alone through the batch runner.
  std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int max_tokens,
                             RoutingOverride routing = {}) {
    GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.f;
    r.ignore_eos = true;
    r.routing = routing;
    auto out = RunToCompletion(*reference_, std::span(&r, 1));
    EXPECT_TRUE(out.ok());
    return (*out)[0].tokens;
  }

  // Submits the requests back to back (tokenized beforehand, so they overlap in the pool);
  // their streams, or fewer if one was refused (reported as a failure).
  static std::vector<std::shared_ptr<RequestStream>> SubmitAll(
      ServingEngine& engine, const std::vector<GenerateRequest>& requests) {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const GenerateRequest& r : requests) {
      auto s = engine.Submit(r);
      if (!s.ok()) {
        ADD_FAILURE() << s.status();
        break;
      }
      streams.push_back(*s);
    }
    return streams;
  }

  static GenerateRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
    GenerateRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.f;
    r.ignore_eos = true;
    return r;
  }

  static std::vector<std::string> Prompts(int n) {
    const char* words[] = {"And",    "the", "LORD", "said", "unto", "Moses", "king", "of",
                           "Israel", "in",  "the",  "day",  "when", "he",    "came", "forth"};
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      std::string p;
      for (int w = 0; w <= i % 9; ++w) p += std::string(w ? " " : "") + words[(i * 7 + w * 3) % 16];
      out.push_back(p);
    }
    return out;
  }

  static LoadedModel* reference_;
};

LoadedModel* EngineTest::reference_ = nullptr;

TEST_F(EngineTest, StreamsTheSameTokensAndTextAsTheBatchGenerator) {
  auto engine = MakeEngine();
  const std::vector<int32_t> prompt = Encode("And the king said unto");
  auto stream = engine->Submit(Greedy(prompt, 24));
  ASSERT_TRUE(stream.ok()) << stream.status();
  Collected c = Drain(**stream);
  EXPECT_EQ(c.tokens, Alone(prompt, 24));
  EXPECT_EQ(c.text, reference_->tokenizer->Decode(c.tokens, true));
  EXPECT_EQ(c.finish.reason, StopReason::kLength);
  EXPECT_EQ(c.finish.usage.prompt_tokens, static_cast<int>(prompt.size()));
  EXPECT_EQ(c.finish.usage.completion_tokens, 24);
  EXPECT_GE(c.finish.ttft_seconds, c.finish.queue_seconds);
}

// 32 concurrent greedy requests, a small token budget so prefills are chunked and mixed
// with decodes, and a KV pool too small for all of them at once so some are preempted
// and recomputed: every output equals the prompt run alone, and no block is left.
TEST_F(EngineTest, ConcurrentChunkedAndPreemptedRequestsMatchTheirAloneOutputs) {
  ServingOptions options;
  options.max_batched_tokens = 24;
  options.max_seqs = 32;
  const KvCacheShape one = reference_->model->KvShape(1);
  options.kv_cache_bytes = 40 * one.BytesPerBlock();  // 32 requests need up to 64 blocks
  auto engine = MakeEngine(options);
  const std::vector<std::string> prompts = Prompts(32);
  // Tokenized first, so the submissions follow each other closely enough to overlap in
  // the pool (on a loaded machine, tokenizing between them let early requests finish).
  std::vector<GenerateRequest> requests;
  for (const std::string& p : prompts) requests.push_back(Greedy(Encode(p), 20));
  std::vector<std::shared_ptr<RequestStream>> streams = SubmitAll(*engine, requests);
  ASSERT_EQ(streams.size(), requests.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Collected c = Drain(*streams[i]);
    EXPECT_EQ(c.tokens, Alone(Encode(prompts[i]), 20)) << "prompt " << i << ": " << prompts[i];
  }
  ASSERT_TRUE(engine->WaitIdle(milliseconds(10000)));
  const ServingStatus st = engine->Status();
  EXPECT_GT(st.preemptions, 0) << "the pool was meant to force preemption";
  EXPECT_EQ(st.kv_blocks_used, 0);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
}

// Per-request routing inside continuous batching: top_k from 1 to E and top_p thresholds
// beside plain requests, chunked and preempted, each equal to its prompt run alone with
// the same routing; and the overrides do change what the model says.
TEST_F(EngineTest, RoutingOverridesMatchTheirAloneOutputsBesidePlainRequests) {
  ServingOptions options;
  options.max_batched_tokens = 24;
  options.max_seqs = 16;
  options.kv_cache_bytes = 24 * reference_->model->KvShape(1).BytesPerBlock();
  auto engine = MakeEngine(options);
  const int E = reference_->config.num_experts;
  const RoutingOverride routes[] = {
      {},           {.top_k = 1}, {.top_k = E},   {.top_p = 0.4f}, {.top_p = 1.f},
      {.top_k = 3}, {},           {.top_p = 0.7f}};
  const std::vector<std::string> prompts = Prompts(16);
  std::vector<GenerateRequest> requests;  // tokenized first, submitted back to back
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests.push_back(Greedy(Encode(prompts[i]), 16));
    requests.back().routing = routes[i % 8];
  }
  std::vector<std::shared_ptr<RequestStream>> streams = SubmitAll(*engine, requests);
  ASSERT_EQ(streams.size(), requests.size());
  int differ = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const RoutingOverride& route = routes[i % 8];
    Collected c = Drain(*streams[i]);
    EXPECT_EQ(c.tokens, Alone(Encode(prompts[i]), 16, route)) << "prompt " << i;
    if (route.any()) differ += c.tokens != Alone(Encode(prompts[i]), 16);
  }
  EXPECT_GE(differ, 4) << "routing overrides hardly changed the greedy continuations";
  ASSERT_TRUE(engine->WaitIdle(milliseconds(10000)));
  EXPECT_GT(engine->Status().preemptions, 0) << "the pool was meant to force preemption";
  EXPECT_EQ(engine->Status().kv_blocks_used, 0);
}

// SCMoE pairs inside continuous batching: pairs (greedy and seeded sampling, some with a
// routing override on the strong pass) beside plain requests, with a small token budget
// and a pool that forces preemption: every request gives what it gives alone, and no
// block is left.
TEST_F(EngineTest, SelfContrastPairsMatchTheirAloneOutputsThroughChunkingAndPreemption) {
  ServingOptions options;
  options.max_batched_tokens = 24;
  options.max_seqs = 16;
  options.kv_cache_bytes = 28 * reference_->model->KvShape(1).BytesPerBlock();
  auto engine = MakeEngine(options);
  const std::vector<std::string> prompts = Prompts(12);
  std::vector<GenerateRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest r = Greedy(Encode(prompts[i]), 16);
    if (i % 3 != 0) {
      SelfContrastParams sc;
      sc.beta = 0.3f + 0.2f * static_cast<float>(i % 4);
      sc.weak_rank = 1 + static_cast<int>(i % 4);
      sc.ban_eos = i % 2 == 0;
      r.self_contrast = sc;
    }
    if (i % 4 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 77 + i;
    }
    if (i % 5 == 2) r.routing.top_k = 3;
    requests.push_back(std::move(r));
  }
  std::vector<std::shared_ptr<RequestStream>> streams = SubmitAll(*engine, requests);
  ASSERT_EQ(streams.size(), requests.size());
  int differ = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    Collected c = Drain(*streams[i]);
    auto alone = RunToCompletion(*reference_, std::span(&requests[i], 1));
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(c.tokens, (*alone)[0].tokens) << "request " << i;
    EXPECT_EQ(c.text, (*alone)[0].text) << "request " << i;
    EXPECT_EQ(c.finish.usage.prompt_tokens, static_cast<int>(requests[i].prompt.size()));
    if (requests[i].self_contrast && requests[i].sampling.greedy()) {
      differ += c.tokens != Alone(requests[i].prompt, 16, requests[i].routing);
    }
  }
  EXPECT_GE(differ, 3) << "self-contrast hardly changed the greedy continuations";
  ASSERT_TRUE(engine->WaitIdle(milliseconds(10000)));
  EXPECT_GT(engine->Status().preemptions, 0) << "the pool was meant to force preemption";
  EXPECT_EQ(engine->Status().kv_blocks_used, 0);
}

TEST_F(EngineTest, ACancelledPairFreesBothSequencesBlocks) {
  auto engine = MakeEngine();
  GenerateRequest r = Greedy(Encode("And the king said unto Moses"), 400);
  r.self_contrast = SelfContrastParams{};
  const int prompt = static_cast<int>(r.prompt.size());
  auto stream = engine->Submit(r);
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::optional<StreamEvent> first = (*stream)->Next(milliseconds(30000));
  ASSERT_TRUE(first.has_value());
  // Both rows hold the prompt and the first token's slot (the status is published after
  // the step that streamed the first token: poll it).
  const int want = 2 * sched::BlocksFor(prompt + 1, kKvBlockSize);
  int used = 0;
  for (int i = 0; i < 1000 && used < want; ++i) {
    used = engine->Status().kv_blocks_used;
    if (used < want) std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_GE(used, want);
  (*stream)->Cancel();
  EXPECT_EQ(Drain(**stream).finish.reason, StopReason::kAbort);
  ASSERT_TRUE(engine->WaitIdle(milliseconds(10000)));
  EXPECT_EQ(engine->Status().kv_blocks_used, 0);
}

TEST_F(EngineTest, SelfContrastOutsideItsRangeIsRefusedWithItsField) {
  ServingOptions options;
  auto engine = MakeEngine(options);
  auto refused = [&](SelfContrastParams sc) {
    GenerateRequest r = Greedy({1, 2, 3}, 4);
    r.self_contrast = sc;
    return std::string(engine->Submit(std::move(r)).status().message());
  };
  EXPECT_THAT(refused({.alpha = 0.f}), HasSubstr("self_contrast.alpha"));
  EXPECT_THAT(refused({.beta = -1.f}), HasSubstr("self_contrast.beta"));
  EXPECT_THAT(refused({.weak_rank = 9}), HasSubstr("self_contrast.weak_rank"));
  // A pair needs twice the blocks of its request: one that fits alone but not doubled.
  ServingOptions small;
  small.kv_cache_bytes = 3 * reference_->model->KvShape(1).BytesPerBlock();
  auto tight = MakeEngine(small);
  GenerateRequest r = Greedy(std::vector<int32_t>(20, 5), 20);  // 3 blocks of 16
  EXPECT_TRUE(tight->Submit(r).ok());
  r.self_contrast = SelfContrastParams{};
  const absl::Status s = tight->Submit(r).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("a strong and a weak sequence"));
}

TEST_F(EngineTest, RoutingOutsideTheModelIsRefusedWithItsField) {
  auto engine = MakeEngine();
  const int E = reference_->config.num_experts;
  auto refused = [&](RoutingOverride route) {
    GenerateRequest r = Greedy({1, 2, 3}, 4);
    r.routing = route;
    return engine->Submit(std::move(r)).status();
  };
  absl::Status s = refused({.top_k = E + 1});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("routing.top_k"));
  s = refused({.top_p = 1.5f});
  EXPECT_THAT(std::string(s.message()), HasSubstr("routing.top_p"));
  s = refused({.top_k = 2, .top_p = 0.5f});
  EXPECT_THAT(std::string(s.message()), HasSubstr("not both"));
  s = refused({.weak_rank = 2});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, ThousandRandomCancellationsLeakNoBlock) {
  ServingOptions options;
  options.max_seqs = 48;
  options.max_queued = 2000;
  auto engine = MakeEngine(options);
  std::mt19937 rng(5);
  const std::vector<std::string> prompts = Prompts(16);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 1000; ++i) {
    GenerateRequest r = Greedy(Encode(prompts[i % 16]), 4 + rng() % 12);
    auto s = engine->Submit(std::move(r));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
    // Cancel a random earlier request now and then, while the engine is stepping.
    if (rng() % 2 == 0) streams[rng() % streams.size()]->Cancel();
    if (i % 50 == 0) std::this_thread::sleep_for(milliseconds(1));
  }
  for (auto& s : streams) s->Cancel();
  int aborted = 0;
  for (auto& s : streams) {
    Collected c = Drain(*s);
    EXPECT_FALSE(c.errored);
    aborted += c.finish.reason == StopReason::kAbort;
  }
  EXPECT_GT(aborted, 500);
  ASSERT_TRUE(engine->WaitIdle(milliseconds(10000)));
  const ServingStatus st = engine->Status();
  EXPECT_EQ(st.kv_blocks_used, 0);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
}

TEST_F(EngineTest, StopStringsStopTokensAndEos) {
  auto engine = MakeEngine();
  const std::vector<int32_t> prompt = Encode("And the king said unto");
  const std::vector<int32_t> alone = Alone(prompt, 24);
  const std::string full = reference_->tokenizer->Decode(alone, true);  // " him, Go, and ..."
  ASSERT_NE(full.find(", and"), std::string::npos) << full;

  GenerateRequest r = Greedy(prompt, 24);
  r.stop = {", and"};
  Collected c = Drain(**engine->Submit(r));
  EXPECT_EQ(c.finish.reason, StopReason::kStop);
  EXPECT_EQ(c.finish.matched_stop, ", and");
  EXPECT_EQ(c.text, full.substr(0, full.find(", and")));

  r = Greedy(prompt, 24);
  r.stop_token_ids = {alone[3]};
  c = Drain(**engine->Submit(r));
  EXPECT_EQ(c.finish.reason, StopReason::kStop);
  const size_t stop_at = std::find(alone.begin(), alone.end(), alone[3]) - alone.begin();
  EXPECT_EQ(c.tokens, std::vector<int32_t>(alone.begin(), alone.begin() + stop_at + 1));
  EXPECT_EQ(c.finish.usage.completion_tokens, static_cast<int>(stop_at) + 1);

  // EOS (id 0 in the default model) ends a request unless ignore_eos.
  r = Greedy(Encode("Blessed are the meek"), 300);
  r.ignore_eos = false;
  r.sampling.temperature = 1.f;
  r.sampling.seed = 7;
  c = Drain(**engine->Submit(r));
  if (c.finish.reason == StopReason::kStop) {
    EXPECT_THAT(reference_->config.eos_token_ids, testing::Contains(c.tokens.back()));
  } else {
    EXPECT_EQ(c.finish.usage.completion_tokens, 300);
  }
}

TEST_F(EngineTest, BadRequestsAreRefusedWithTheirField) {
  ServingOptions options;
  options.max_queued = 4;
  auto engine = MakeEngine(options);
  const int vocab = engine->config().vocab_size;
  const int context = engine->config().max_position_embeddings;
  auto code = [&](GenerateRequest r) { return engine->Submit(std::move(r)).status(); };

  absl::Status s = code(Greedy({}, 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("prompt is empty"));
  s = code(Greedy({1, vocab}, 4));
  EXPECT_THAT(std::string(s.message()), HasSubstr("outside the vocabulary"));
  s = code(Greedy({1, 2}, 0));
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_tokens"));
  s = code(Greedy({1, 2}, context));
  EXPECT_THAT(std::string(s.message()), HasSubstr("exceeds the context"));
  GenerateRequest bad = Greedy({1, 2}, 4);
  bad.sampling.top_p = 0.f;
  EXPECT_EQ(code(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Greedy({1, 2}, 4);
  bad.sampling.temperature = -1.f;
  EXPECT_EQ(code(bad).code(), absl::StatusCode::kInvalidArgument);

  // Duplicate live id.
  GenerateRequest a = Greedy({1, 2, 3}, 200);
  a.id = "same";
  auto first = engine->Submit(a);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(code(a).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(engine->Abort("same"));
  EXPECT_EQ(Drain(**first).finish.reason, StopReason::kAbort);
  EXPECT_FALSE(engine->Abort("no-such-id"));

  // Draining refuses new work; requests already in go on.
  auto running = engine->Submit(Greedy({1, 2, 3}, 8));
  ASSERT_TRUE(running.ok());
  engine->Drain();
  EXPECT_EQ(code(Greedy({1, 2}, 4)).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->Status().draining);
  EXPECT_EQ(Drain(**running).finish.reason, StopReason::kLength);
}

TEST_F(EngineTest, QueueFullIsResourceExhausted) {
  ServingOptions options;
  options.max_queued = 2;
  options.max_seqs = 1;
  auto engine = MakeEngine(options);
  std::vector<std::shared_ptr<RequestStream>> keep;
  absl::Status last;
  for (int i = 0; i < 20 && last.ok(); ++i) {
    auto s = engine->Submit(Greedy({1, 2, 3}, 500));
    last = s.status();
    if (s.ok()) keep.push_back(*s);
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  for (auto& s : keep) s->Cancel();
  for (auto& s : keep) Drain(*s);
  EXPECT_TRUE(engine->Submit(Greedy({1, 2, 3}, 2)).ok()) << "the queue drained";
}

TEST_F(EngineTest, DeadlineInThePastAborts) {
  auto engine = MakeEngine();
  GenerateRequest r = Greedy({1, 2, 3}, 100);
  r.deadline = std::chrono::steady_clock::now() - milliseconds(1);
  Collected c = Drain(**engine->Submit(r));
  EXPECT_EQ(c.finish.reason, StopReason::kAbort);
  EXPECT_TRUE(engine->WaitIdle(milliseconds(5000)));
  EXPECT_EQ(engine->Status().kv_blocks_used, 0);
}

// Counts what the engine reports to its observer (the metrics' source).
class CountingObserver : public ServingObserver {
 public:
  void OnStep(const Step& step) override {
    ++steps;
    step_tokens += step.num_tokens;
    experts_per_token.resize(step.num_experts + 1);
    for (int n = 0; n <= step.num_experts; ++n) experts_per_token[n] += step.experts_per_token[n];
    for (int l = 0; l < step.num_layers && top_k > 0; ++l) {
      int routed = 0;
      for (int e = 0; e < step.num_experts; ++e)
        routed += step.expert_tokens[l * step.num_experts + e];
      routed_per_layer_ok &= routed == step.num_tokens * top_k;
    }
  }
  void OnFirstToken(double ttft, double queue) override {
    ++first_tokens;
    ttft_ge_queue &= ttft >= queue;
  }
  void OnInterToken(double) override { ++inter_tokens; }
  void OnServedOptions(const Options& o) override { routing_served += o.routing_override; }
  void OnFinish(StopReason, const Usage& usage, double) override {
    ++finished;
    prompt_tokens += usage.prompt_tokens;
    completion_tokens += usage.completion_tokens;
  }
  int top_k = 0, routing_served = 0;
  std::vector<int64_t> experts_per_token;  // summed over steps
  int steps = 0, first_tokens = 0, inter_tokens = 0, finished = 0;
  int64_t step_tokens = 0, prompt_tokens = 0, completion_tokens = 0;
  bool routed_per_layer_ok = true, ttft_ge_queue = true;
};

TEST_F(EngineTest, ObserverSeesEveryStepTokenAndRequest) {
  auto observer = std::make_shared<CountingObserver>();
  observer->top_k = reference_->config.top_k;
  ServingOptions options;
  options.observer = observer;
  auto engine = MakeEngine(options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  int prompt_total = 0;
  for (const std::string& p : Prompts(6)) {
    std::vector<int32_t> ids = Encode(p);
    prompt_total += static_cast<int>(ids.size());
    streams.push_back(*engine->Submit(Greedy(ids, 5)));
  }
  for (auto& s : streams) Drain(*s);
  ASSERT_TRUE(engine->WaitIdle(milliseconds(5000)));
  engine.reset();  // joins the engine thread: the observer is no longer written
  EXPECT_EQ(observer->finished, 6);
  EXPECT_EQ(observer->first_tokens, 6);
  EXPECT_EQ(observer->inter_tokens, 6 * 4);
  EXPECT_EQ(observer->prompt_tokens, prompt_total);
  EXPECT_EQ(observer->completion_tokens, 30);
  // Every prompt token once, and every generated token but the last of each request.
  EXPECT_EQ(observer->step_tokens, prompt_total + 6 * 4);
  EXPECT_GT(observer->steps, 0);
  EXPECT_TRUE(observer->routed_per_layer_ok) << "expert counts do not add up to T*K per layer";
  EXPECT_TRUE(observer->ttft_ge_queue);
}

// The experts each token used, per MoE layer: K for plain requests, N for routing top_k N;
// and each request served with an override counted once.
TEST_F(EngineTest, ObserverCountsExpertsPerTokenAndRoutedRequests) {
  auto observer = std::make_shared<CountingObserver>();  // top_k 0: no T*K check
  ServingOptions options;
  options.observer = observer;
  auto engine = MakeEngine(options);
  const ModelConfig& cfg = reference_->config;
  const int E = cfg.num_experts, K = cfg.top_k;
  int moe_layers = 0;
  for (bool moe : cfg.layer_is_moe) moe_layers += moe;
  GenerateRequest plain = Greedy(Encode("And the king said"), 6);
  GenerateRequest all = Greedy(Encode("unto Moses in the day"), 5);
  all.routing.top_k = E;
  GenerateRequest one = Greedy(Encode("when he came"), 4);
  one.routing.top_k = 1;
  // Every prompt token and every generated token but the last goes through the model.
  auto tokens = [](const GenerateRequest& r) {
    return static_cast<int64_t>(r.prompt.size()) + r.max_tokens - 1;
  };
  const int64_t want_k = tokens(plain), want_e = tokens(all), want_1 = tokens(one);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (GenerateRequest* r : {&plain, &all, &one}) streams.push_back(*engine->Submit(*r));
  for (auto& s : streams) Drain(*s);
  ASSERT_TRUE(engine->WaitIdle(milliseconds(5000)));
  engine.reset();
  ASSERT_EQ(observer->experts_per_token.size(), static_cast<size_t>(E + 1));
  for (int n = 0; n <= E; ++n) {
    const int64_t want =
        moe_layers * ((n == K ? want_k : 0) + (n == E ? want_e : 0) + (n == 1 ? want_1 : 0));
    EXPECT_EQ(observer->experts_per_token[n], want) << n << " experts";
  }
  EXPECT_EQ(observer->routing_served, 2);
}

TEST_F(EngineTest, DestroyingTheEngineAbortsLiveRequests) {
  std::shared_ptr<RequestStream> s;
  {
    auto engine = MakeEngine();
    s = *engine->Submit(Greedy({1, 2, 3}, 900));
  }
  EXPECT_EQ(Drain(*s).finish.reason, StopReason::kAbort);
}

}  // namespace
}  // namespace moe
