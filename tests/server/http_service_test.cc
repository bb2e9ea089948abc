// The HTTP service end to end on the default model (label e2e): a real ServingEngine, an
// httplib::Server on 127.0.0.1 with a free port, driven by httplib::Client. Completions
// (string and token prompts), SSE streaming, chat with the checkpoint's ChatML template,
// models, tokenize/detokenize, every bad input with its status and error type (and the
// server still serving after each), and a disconnect that aborts the generation.
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/loader.h"
#include "scheduler/serving_engine.h"
#include "server/http_service.h"
#include "tests/server/http_test_util.h"

namespace moe::server {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::SseData;
using testing::TestHttpServer;

constexpr size_t kMaxBody = 64 << 10;

class HttpServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<LoadedModel> model = LoadModelDir(DefaultModelDir());
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<std::unique_ptr<ServingEngine>> engine =
        ServingEngine::Create(std::move(*model), {});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    HttpOptions options;
    service_ = new HttpService(*engine_, options);
    HttpServerOptions transport;
    transport.max_body_bytes = kMaxBody;
    server_ = new TestHttpServer(*service_, transport);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete service_;
    delete engine_;
  }

  static json PostJson(const std::string& path, const json& body, int expect_status = 200) {
    httplib::Client client = server_->Client();
    httplib::Result res = client.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expect_status) << path << " " << body.dump() << " -> " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  // The SSE events of a streaming request, parsed (the final "[DONE]" checked and
  // dropped).
  static std::vector<json> PostStream(const std::string& path, const json& body) {
    httplib::Client client = server_->Client();
    httplib::Result res = client.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    std::vector<std::string> data = SseData(res->body);
    EXPECT_FALSE(data.empty());
    if (data.empty()) return {};
    EXPECT_EQ(data.back(), "[DONE]");
    std::vector<json> events;
    for (size_t i = 0; i + 1 < data.size(); ++i) events.push_back(json::parse(data[i]));
    return events;
  }

  static ServingEngine* engine_;
  static HttpService* service_;
  static TestHttpServer* server_;
};

ServingEngine* HttpServiceTest::engine_ = nullptr;
HttpService* HttpServiceTest::service_ = nullptr;
TestHttpServer* HttpServiceTest::server_ = nullptr;

void ExpectUsage(const json& usage, int prompt_tokens, int completion_tokens) {
  EXPECT_EQ(usage["prompt_tokens"], prompt_tokens) << usage;
  EXPECT_EQ(usage["completion_tokens"], completion_tokens) << usage;
  EXPECT_EQ(usage["total_tokens"], prompt_tokens + completion_tokens) << usage;
}

TEST_F(HttpServiceTest, CompletionWithStringAndTokenPrompts) {
  const std::string prompt = "The quick brown fox";
  json tokens = PostJson("/tokenize", {{"prompt", prompt}});
  ASSERT_TRUE(tokens["tokens"].is_array());
  const int n = tokens["count"];
  ASSERT_GT(n, 0);

  json request = {{"model", "default"},
                  {"prompt", prompt},
                  {"max_tokens", 8},
                  {"temperature", 0},
                  {"ignore_eos", true}};
  json by_text = PostJson("/v1/completions", request);
  EXPECT_EQ(by_text["object"], "text_completion");
  EXPECT_EQ(by_text["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(by_text["model"], "default");
  EXPECT_TRUE(by_text["created"].is_number_integer());
  ASSERT_EQ(by_text["choices"].size(), 1u);
  const json& choice = by_text["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_FALSE(choice["text"].get<std::string>().empty());
  ExpectUsage(by_text["usage"], n, 8);

  request["prompt"] = tokens["tokens"];
  json by_ids = PostJson("/v1/completions", request);
  EXPECT_EQ(by_ids["choices"][0]["text"], choice["text"]);  // greedy: the same text
  ExpectUsage(by_ids["usage"], n, 8);

  // Without max_tokens: OpenAI's default of 16 at most.
  json plain = PostJson("/v1/completions", {{"prompt", prompt}, {"seed", 3}});
  EXPECT_LE(plain["usage"]["completion_tokens"].get<int>(), 16);
}

TEST_F(HttpServiceTest, StreamingMatchesNonStreaming) {
  json request = {
      {"prompt", "Once upon a time"}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}};
  const std::string expected = PostJson("/v1/completions", request)["choices"][0]["text"];
  request["stream"] = true;
  std::vector<json> events = PostStream("/v1/completions", request);
  ASSERT_GE(events.size(), 2u);
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "text_completion");
    EXPECT_TRUE(events[i]["choices"][0]["finish_reason"].is_null()) << events[i];
    EXPECT_FALSE(events[i].contains("usage"));
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  const json& last = events.back();
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["id"], events.front()["id"]);
  EXPECT_FALSE(last.contains("usage"));  // only with stream_options.include_usage
  EXPECT_EQ(text, expected);
}

TEST_F(HttpServiceTest, StreamUsageOnlyWithIncludeUsageAsItsOwnLastChunk) {
  json request = {{"prompt", "Once upon a time"},
                  {"max_tokens", 12},
                  {"temperature", 0},
                  {"ignore_eos", true},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}}};
  std::vector<json> events = PostStream("/v1/completions", request);
  ASSERT_GE(events.size(), 3u);
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_TRUE(events[i].contains("usage")) << events[i];
    EXPECT_TRUE(events[i]["usage"].is_null()) << events[i];
    EXPECT_EQ(events[i]["choices"].size(), 1u);
  }
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  const json& usage_chunk = events.back();
  EXPECT_EQ(usage_chunk["object"], "text_completion");
  EXPECT_EQ(usage_chunk["id"], events.front()["id"]);
  EXPECT_TRUE(usage_chunk["choices"].is_array() && usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 12);
  EXPECT_EQ(usage_chunk["usage"]["total_tokens"],
            usage_chunk["usage"]["prompt_tokens"].get<int>() + 12);

  request["stream_options"] = {{"include_usage", false}};
  events = PostStream("/v1/completions", request);
  ASSERT_FALSE(events.empty());
  for (const json& e : events) EXPECT_FALSE(e.contains("usage")) << e;
}

TEST_F(HttpServiceTest, StopString) {
  json request = {
      {"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  const std::string full = PostJson("/v1/completions", request)["choices"][0]["text"];
  ASSERT_GE(full.size(), 8u) << full;
  const std::string stop = full.substr(full.size() / 2, 2);
  request["stop"] = {stop};
  json stopped = PostJson("/v1/completions", request);
  EXPECT_EQ(stopped["choices"][0]["text"], full.substr(0, full.find(stop))) << "stop " << stop;
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
}

TEST_F(HttpServiceTest, ChatWithTheChatMlTemplate) {
  json request = {{"model", "default"},
                  {"messages",
                   {{{"role", "system"}, {"content", "You are terse."}},
                    {{"role", "user"}, {"content", "Tell me a story."}}}},
                  {"max_tokens", 10},
                  {"temperature", 0}};
  json reply = PostJson("/v1/chat/completions", request);
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  const json& choice = reply["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  ASSERT_TRUE(choice["message"]["content"].is_string());
  EXPECT_TRUE(choice["finish_reason"] == "stop" || choice["finish_reason"] == "length");
  // The prompt is the rendered ChatML conversation.
  json rendered = PostJson(
      "/tokenize", {{"prompt",
                     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nTell me a "
                     "story.<|im_end|>\n<|im_start|>assistant\n"}});
  EXPECT_EQ(reply["usage"]["prompt_tokens"], rendered["count"]);
  EXPECT_LE(reply["usage"]["completion_tokens"].get<int>(), 10);

  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  std::vector<json> events = PostStream("/v1/chat/completions", request);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (const json& e : events) {
    if (e["choices"].empty()) continue;  // the usage chunk
    if (e["choices"][0]["delta"].contains("content")) {
      content += e["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(content, choice["message"]["content"].get<std::string>());
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], choice["finish_reason"]);
  EXPECT_EQ(events.back()["object"], "chat.completion.chunk");
  EXPECT_EQ(events.back()["usage"], reply["usage"]);
}

TEST_F(HttpServiceTest, ModelsHealthReady) {
  httplib::Client client = server_->Client();
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json list = json::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "default");
  EXPECT_EQ(list["data"][0]["object"], "model");
  EXPECT_EQ(list["data"][0]["max_model_len"], 1024);
  EXPECT_EQ(client.Get("/v1/models/default")->status, 200);
  EXPECT_EQ(client.Get("/health")->status, 200);
  EXPECT_EQ(client.Get("/ready")->status, 200);
}

TEST_F(HttpServiceTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, wörld! 你好 <|im_start|>";
  json tokens = PostJson("/tokenize", {{"text", text}});
  EXPECT_EQ(tokens["count"], tokens["tokens"].size());
  json back = PostJson("/detokenize", {{"tokens", tokens["tokens"]}});
  EXPECT_EQ(back["prompt"], text);
}

struct BadRequest {
  const char* path;
  std::string body;
  int status;
  const char* type;
};

TEST_F(HttpServiceTest, BadInputsGetTheirStatusAndTheServerKeepsServing) {
  std::string too_long = "[";
  for (int i = 0; i < 1100; ++i) too_long += (i ? ",5" : "5");
  too_long += "]";
  const std::vector<BadRequest> cases = {
      {"/v1/completions", R"({"prompt": "hi", )", 400, "invalid_request_error"},
      {"/v1/completions", "{\"prompt\": \"caf\xc3\x28\"}", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": 12})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": "8"})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": ""})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": )" + too_long + "}", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": 0})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": 5000})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "temperature": -1})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "top_p": 0})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "top_p": 1.5})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": [1, 4096]})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": [-1]})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"prompt": "hi", "n": 2})", 400, "invalid_request_error"},
      {"/v1/completions", R"({"model": "gpt-4o", "prompt": "hi"})", 404, "not_found_error"},
      {"/v1/completions", json{{"prompt", std::string(kMaxBody + 10, 'a')}}.dump(), 413,
       "invalid_request_error"},
      {"/v1/chat/completions", R"({"messages": []})", 400, "invalid_request_error"},
      {"/v1/chat/completions", R"({"messages": [{"role": "bot", "content": "hi"}]})", 400,
       "invalid_request_error"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 7}]})", 400,
       "invalid_request_error"},
      {"/v1/chat/completions", R"({"model": "x", "messages": [{"role": "user", "content": "a"}]})",
       404, "not_found_error"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "a"}], "stream": 1})",
       400, "invalid_request_error"},
      {"/tokenize", R"({"prompt": ["a"]})", 400, "invalid_request_error"},
      {"/detokenize", R"({"tokens": [1, 99999]})", 400, "invalid_request_error"},
      {"/v1/embeddings", R"({"input": "a"})", 404, "not_found_error"},
  };
  httplib::Client client = server_->Client();
  for (const BadRequest& c : cases) {
    httplib::Result res = client.Post(c.path, c.body, "application/json");
    ASSERT_TRUE(res) << c.path << " " << c.body.substr(0, 200);
    EXPECT_EQ(res->status, c.status)
        << c.path << " " << c.body.substr(0, 200) << " -> " << res->body;
    json error = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.is_object()) << res->body;
    EXPECT_EQ(error["error"]["type"], c.type) << res->body;
    EXPECT_FALSE(error["error"]["message"].get<std::string>().empty()) << res->body;
    // The server goes on serving.
    json ok = PostJson("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 1}});
    EXPECT_EQ(ok["usage"]["completion_tokens"], 1) << "after " << c.body.substr(0, 200);
  }
}

TEST_F(HttpServiceTest, DisconnectAbortsTheGeneration) {
  ASSERT_TRUE(engine_->WaitIdle(milliseconds(10000)));
  const int64_t steps_before = engine_->Status().steps;
  httplib::Client client = server_->Client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body =
      json{{"prompt", "hi"}, {"max_tokens", 1000}, {"ignore_eos", true}, {"stream", true}}.dump();
  req.set_header("Content-Type", "application/json");
  std::string received;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    received.append(data, len);
    return received.find("\"text\"") == std::string::npos;  // leave after the first token
  };
  EXPECT_FALSE(client.send(req));
  EXPECT_TRUE(engine_->WaitIdle(milliseconds(30000)));
  const int64_t steps = engine_->Status().steps - steps_before;
  // 1,000 tokens take about 1,000 steps; the abort came long before.
  EXPECT_LT(steps, 500) << "the request ran on after its client left";
  EXPECT_EQ(engine_->Status().running + engine_->Status().waiting, 0);
}

// Not streamed: the client's hang-up is seen on its socket while the request runs, and
// the request is aborted, not run to completion.
TEST_F(HttpServiceTest, DisconnectAbortsANonStreamedGenerationToo) {
  ASSERT_TRUE(engine_->WaitIdle(milliseconds(10000)));
  const int64_t steps_before = engine_->Status().steps;
  {
    httplib::Client client = server_->Client();
    client.set_read_timeout(0, 20'000);  // give up (and close) after 20 ms
    const std::string body =
        json{{"prompt", "hi"}, {"max_tokens", 1000}, {"ignore_eos", true}}.dump();
    EXPECT_FALSE(client.Post("/v1/completions", body, "application/json"));
  }
  EXPECT_TRUE(engine_->WaitIdle(milliseconds(30000)));
  const int64_t steps = engine_->Status().steps - steps_before;
  EXPECT_LT(steps, 500) << "the request ran on after its client left";
  EXPECT_EQ(engine_->Status().running + engine_->Status().waiting, 0);
}

}  // namespace
}  // namespace moe::server
