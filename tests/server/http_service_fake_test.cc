// The HTTP service over a scripted ServingEngine (no model run): engine statuses become 429/503,
// readiness follows draining, a client that disconnects mid-stream cancels its request,
// a stalled non-streaming request times out, body limits and unknown paths get OpenAI
// error bodies.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/loader.h"
#include "engine/model_config.h"
#include "scheduler/serving_engine.h"
#include "server/http_frontend.h"
#include "server/http_service.h"
#include "tests/server/http_test_util.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::SseData;
using testing::TestHttpServer;

// Emits a token "x" every 5 ms until cancelled or past its deadline (then a kAbort
// finish), or an internal error after `error_after` tokens. Like the engine, it calls
// its on_event (from the FakeEngine's ticker thread) when an event is ready.
class FakeStream : public RequestStream {
 public:
  FakeStream(GenerateRequest request, int error_after, std::function<void()> on_event)
      : request_(std::move(request)), error_after_(error_after), on_event_(std::move(on_event)) {}
  const std::string& id() const override { return request_.id; }
  std::optional<StreamEvent> Next(milliseconds timeout) override {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (std::optional<StreamEvent> e = TryNext()) return e;
      if (std::chrono::steady_clock::now() >= end) return std::nullopt;
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  std::optional<StreamEvent> TryNext() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return std::nullopt;
    StreamEvent e;
    const auto now = std::chrono::steady_clock::now();
    const bool late = request_.deadline && now > *request_.deadline;
    if (cancelled_ || late) {
      ended_ = true;
      e.kind = StreamEvent::Kind::kFinish;
      e.reason = StopReason::kAbort;
      return e;
    }
    if (now < next_due_) return std::nullopt;
    next_due_ = now + milliseconds(5);
    if (error_after_ >= 0 && emitted_ == error_after_) {
      ended_ = true;
      e.kind = StreamEvent::Kind::kError;
      e.error = absl::InternalError("forward failed");
      return e;
    }
    ++emitted_;
    e.token_ids = {5};
    e.text = "x";
    return e;
  }
  // The ticker's: wakes the consumer while the stream is live.
  void Tick() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_) return;
    }
    if (on_event_) on_event_();
  }
  void Cancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  const GenerateRequest& request() const { return request_; }

 private:
  GenerateRequest request_;
  int error_after_;
  std::function<void()> on_event_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_due_ = std::chrono::steady_clock::now();
  bool cancelled_ = false;
  bool ended_ = false;
  int emitted_ = 0;
};

class FakeEngine : public ServingEngine {
 public:
  FakeEngine() : dir_(DefaultModelDir()) {
    config_ = *LoadModelConfig(dir_);
    tokenizer_ = *Tokenizer::FromFiles(dir_ + "/tokenizer.json", dir_ + "/tokenizer_config.json");
    limits_.context_length = limits_.max_prompt_tokens = limits_.max_tokens =
        config_.max_position_embeddings;
    limits_.vocab_size = config_.vocab_size;
    ticker_ = std::thread([this] {
      while (!stop_) {
        std::this_thread::sleep_for(milliseconds(5));
        std::vector<std::shared_ptr<FakeStream>> live;
        {
          std::lock_guard<std::mutex> lock(mu);
          live = streams;
        }
        for (const auto& stream : live) stream->Tick();
      }
    });
  }
  ~FakeEngine() override {
    stop_ = true;
    ticker_.join();
  }
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerateRequest request,
                                                        std::function<void()> on_event) override {
    std::lock_guard<std::mutex> lock(mu);
    if (!submit_status.ok()) return submit_status;
    auto stream =
        std::make_shared<FakeStream>(std::move(request), error_after, std::move(on_event));
    streams.push_back(stream);
    return stream;
  }
  bool Abort(const std::string&) override { return false; }
  ServingStatus Status() const override {
    ServingStatus s;
    s.draining = draining;
    return s;
  }
  void Drain() override { draining = true; }
  bool WaitIdle(milliseconds) override { return true; }
  const ServingLimits& limits() const override { return limits_; }
  ServingLimits& mutable_limits() { return limits_; }
  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }
  const std::string& model_dir() const override { return dir_; }

  std::shared_ptr<FakeStream> last() {
    std::lock_guard<std::mutex> lock(mu);
    return streams.empty() ? nullptr : streams.back();
  }

  absl::Status submit_status;
  int error_after = -1;
  std::atomic<bool> draining{false};
  std::mutex mu;  // guards streams
  std::vector<std::shared_ptr<FakeStream>> streams;

 private:
  std::string dir_;
  ModelConfig config_;
  ServingLimits limits_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::atomic<bool> stop_{false};
  std::thread ticker_;
};

HttpOptions Options() {
  HttpOptions options;
  options.served_model_names = {"tiny"};
  options.request_timeout = std::chrono::seconds(1);
  return options;
}

// The transport's limits for these tests: small bodies.
HttpServerOptions Transport() {
  HttpServerOptions options;
  options.max_body_bytes = 4096;
  return options;
}

void ExpectError(const httplib::Result& res, int status, const std::string& type,
                 const std::string& code) {
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, status) << res->body;
  json body = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << res->body;
  EXPECT_EQ(body["error"]["type"], type) << res->body;
  if (code.empty()) {
    EXPECT_TRUE(body["error"]["code"].is_null()) << res->body;
  } else {
    EXPECT_EQ(body["error"]["code"], code) << res->body;
  }
  EXPECT_FALSE(body["error"]["message"].get<std::string>().empty());
}

TEST(HttpServiceFakeTest, EngineStatusesBecomeHttpStatuses) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  const std::string body = R"({"prompt": "hi", "max_tokens": 2})";

  engine.submit_status = absl::ResourceExhaustedError("the queue is full");
  ExpectError(client.Post("/v1/completions", body, "application/json"), 429, "rate_limit_error",
              "queue_full");
  engine.submit_status = absl::UnavailableError("draining");
  ExpectError(client.Post("/v1/chat/completions",
                          R"({"messages": [{"role": "user", "content": "hi"}], "stream": true})",
                          "application/json"),
              503, "service_unavailable_error", "server_unavailable");
  engine.submit_status = absl::InvalidArgumentError("max_tokens is above the server's cap");
  ExpectError(client.Post("/v1/completions", body, "application/json"), 400,
              "invalid_request_error", "");
}

TEST(HttpServiceFakeTest, ReadinessFollowsDraining) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  EXPECT_EQ(client.Get("/health")->status, 200);
  EXPECT_EQ(client.Get("/ready")->status, 200);
  engine.Drain();
  EXPECT_EQ(client.Get("/ready")->status, 503);
  EXPECT_EQ(client.Get("/health")->status, 200);
}

TEST(HttpServiceFakeTest, RequestFieldsReachTheEngine) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  auto res = client.Post("/v1/completions",
                         R"({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 3,
                             "temperature": 0, "seed": 7, "stop": "\n", "ignore_eos": true})",
                         "application/json");
  ASSERT_TRUE(res);
  // The fake never finishes by itself: the request ends at its 1 s deadline with 504.
  ExpectError(res, 504, "server_error", "timeout");
  std::shared_ptr<FakeStream> stream = engine.last();
  ASSERT_NE(stream, nullptr);
  const GenerateRequest& r = stream->request();
  EXPECT_EQ(r.id.rfind("cmpl-", 0), 0u) << r.id;
  EXPECT_EQ(r.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r.max_tokens, 3);
  EXPECT_EQ(r.sampling.temperature, 0.f);
  EXPECT_EQ(r.sampling.seed, 7u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_TRUE(r.deadline.has_value());
}

TEST(HttpServiceFakeTest, ClientDisconnectCancelsTheStream) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt": "hi", "max_tokens": 100, "stream": true})";
  req.set_header("Content-Type", "application/json");
  std::string received;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    received.append(data, len);
    return received.find("data: ") == std::string::npos;  // hang up after the first event
  };
  httplib::Result res = client.send(req);
  EXPECT_FALSE(res);  // the client cancelled
  EXPECT_NE(received.find("\"text\":\"x\""), std::string::npos) << received;
  std::shared_ptr<FakeStream> stream = engine.last();
  ASSERT_NE(stream, nullptr);
  for (int i = 0; i < 300 && !stream->cancelled(); ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_TRUE(stream->cancelled()) << "the server did not cancel the request of a client that left";
  EXPECT_FALSE(stream->request().deadline.has_value());  // streams end by disconnect instead
}

TEST(HttpServiceFakeTest, ErrorAfterAcceptanceEndsTheStream) {
  FakeEngine engine;
  engine.error_after = 2;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  auto res = client.Post("/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": "hi"}], "stream": true})",
                         "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  std::vector<std::string> events = SseData(res->body);
  ASSERT_EQ(events.size(), 5u) << res->body;  // role, x, x, error, [DONE]
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(json::parse(events[1])["choices"][0]["delta"]["content"], "x");
  EXPECT_EQ(json::parse(events[3])["error"]["type"], "server_error");
  EXPECT_EQ(events[4], "[DONE]");
  // Non-streaming: the error is the response.
  ExpectError(client.Post("/v1/completions", R"({"prompt": "hi"})", "application/json"), 500,
              "server_error", "");
}

TEST(HttpServiceFakeTest, LimitsAndUnknownPaths) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  const std::string big = json{{"prompt", std::string(5000, 'a')}}.dump();
  ExpectError(client.Post("/v1/completions", big, "application/json"), 413, "invalid_request_error",
              "request_too_large");
  ExpectError(client.Post("/tokenize", big, "application/json"), 413, "invalid_request_error",
              "request_too_large");
  ExpectError(client.Get("/v1/nothing"), 404, "not_found_error", "not_found");
  // A route asked with the wrong method: 405 with the method it takes.
  auto wrong = client.Get("/v1/completions");
  ExpectError(wrong, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(wrong->get_header_value("Allow"), "POST");
  auto wrong_delete = client.Delete("/health");
  ExpectError(wrong_delete, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(wrong_delete->get_header_value("Allow"), "GET");
  auto wrong_put = client.Put("/tokenize", "{}", "application/json");
  ExpectError(wrong_put, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(wrong_put->get_header_value("Allow"), "POST");
  ExpectError(client.Post("/v1/models/tiny", "{}", "application/json"), 405,
              "invalid_request_error", "method_not_allowed");
  ExpectError(client.Get("/v1/models/other"), 404, "not_found_error", "model_not_found");
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  EXPECT_EQ(json::parse(models->body)["data"].size(), 1u);
  // Still serving.
  EXPECT_EQ(client.Get("/health")->status, 200);
}

TEST(HttpServiceFakeTest, EveryAliasAndDefaultNameTheModel) {
  FakeEngine engine;
  HttpOptions options = Options();
  options.served_model_names = {"tiny", "tiny-moe-v2"};
  HttpService service(engine, options);
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  const json data = json::parse(models->body)["data"];
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[0]["id"], "tiny");
  EXPECT_EQ(data[1]["id"], "tiny-moe-v2");
  // A request that passes the model check reaches the engine, which here refuses it
  // with a full queue (429); a wrong model never gets there (404).
  engine.submit_status = absl::ResourceExhaustedError("the queue is full");
  for (const char* name : {"tiny", "tiny-moe-v2", "default"}) {
    auto one = client.Get(std::string("/v1/models/") + name);
    ASSERT_TRUE(one);
    EXPECT_EQ(one->status, 200) << name;
    EXPECT_EQ(json::parse(one->body)["id"], name);
    ExpectError(client.Post("/v1/completions",
                            json{{"model", name}, {"prompt", json::array({1, 2})}}.dump(),
                            "application/json"),
                429, "rate_limit_error", "queue_full");
  }
  ExpectError(
      client.Post("/v1/completions", R"({"model": "other", "prompt": [1]})", "application/json"),
      404, "not_found_error", "model_not_found");
}

TEST(HttpServiceFakeTest, ModelsReportTheCapsNotJustTheContext) {
  FakeEngine engine;
  engine.mutable_limits().max_prompt_tokens = 100;
  engine.mutable_limits().max_tokens = 50;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  const json model = json::parse(models->body)["data"][0];
  EXPECT_EQ(model["max_model_len"], 150);
  EXPECT_EQ(model["max_prompt_tokens"], 100);
  EXPECT_EQ(model["max_tokens"], 50);
}

TEST(HttpServiceFakeTest, MoreConcurrentStreamsThanTheTransportHasThreads) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  constexpr int kStreams = 64;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&] {
      httplib::Client client = server.Client();
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = R"({"prompt": "hi", "stream": true})";
      req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return !stop; };
      client.send(req);
    });
  }
  auto submitted = [&] {
    std::lock_guard<std::mutex> lock(engine.mu);
    return engine.streams.size();
  };
  for (int i = 0; i < 1000 && submitted() < kStreams; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(submitted(), static_cast<size_t>(kStreams));
  stop = true;
  for (std::thread& t : clients) t.join();
}

TEST(HttpServiceFakeTest, NotServingRefusesNewRequests) {
  FakeEngine engine;
  HttpService service(engine, Options());
  TestHttpServer server(service, Transport());
  httplib::Client client = server.Client();
  service.SetServing(false);
  EXPECT_EQ(client.Get("/ready")->status, 503);
  ExpectError(client.Post("/v1/completions", R"({"prompt": "hi"})", "application/json"), 503,
              "service_unavailable_error", "server_unavailable");
  EXPECT_EQ(engine.last(), nullptr);  // nothing reached the engine
  service.SetServing(true);
  EXPECT_EQ(client.Get("/ready")->status, 200);
}

TEST(HttpServiceFakeTest, FrontendBindsAFreePortAndShutsDown) {
  FakeEngine engine;
  absl::StatusOr<std::unique_ptr<Frontend>> frontend =
      StartHttpFrontend({&engine, "127.0.0.1", 0}, Options());
  ASSERT_TRUE(frontend.ok()) << frontend.status();
  const int port = (*frontend)->port();
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // A stream in progress when shutdown starts: the grace lets it run, then it is cut and
  // its engine request cancelled.
  std::thread streamer([&] {
    httplib::Client c("127.0.0.1", port);
    c.Post("/v1/completions", R"({"prompt": "hi", "stream": true})", "application/json");
  });
  for (int i = 0; i < 200 && engine.last() == nullptr; ++i) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_NE(engine.last(), nullptr);
  (*frontend)->SetServing(false);
  EXPECT_EQ(client.Get("/ready")->status, 503);
  (*frontend)->Shutdown(milliseconds(100));
  streamer.join();
  EXPECT_TRUE(engine.last()->cancelled());
  EXPECT_FALSE(httplib::Client("127.0.0.1", port).Get("/health"));  // no longer listening
  // Binding a port in use fails cleanly.
  absl::StatusOr<std::unique_ptr<Frontend>> a = StartHttpFrontend({&engine, "127.0.0.1", 0}, {});
  ASSERT_TRUE(a.ok());
  absl::StatusOr<std::unique_ptr<Frontend>> b =
      StartHttpFrontend({&engine, "127.0.0.1", (*a)->port()}, {});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable) << b.status();
}

}  // namespace
}  // namespace moe::server
