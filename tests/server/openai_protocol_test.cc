// Validation of the OpenAI request bodies (server/openai_protocol.h): every bad input of
// issue 3 maps to its status, param and code; good bodies become the engine request.
#include "server/openai_protocol.h"

#include "absl/strings/str_cat.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/loader.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {
namespace {

using json = nlohmann::json;

class OpenAiProtocolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = DefaultModelDir();
    auto tokenizer = Tokenizer::FromFiles(dir + "/tokenizer.json", dir + "/tokenizer_config.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer).release();
    chat_template_ = new ChatTemplate(ChatTemplate::FromModelDir(dir));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete chat_template_;
  }

  ModelLimits Limits() const {
    ModelLimits limits;
    limits.served_names = {"tiny-moe", "alias"};
    limits.context = 64;
    limits.vocab_size = 4096;
    limits.num_routed_experts = 8;
    return limits;
  }

  std::optional<ApiError> Completion(const std::string& body, ParsedGeneration* out = nullptr) {
    json parsed;
    if (auto e = ParseJsonObject(body, &parsed)) return e;
    ParsedGeneration local;
    return ParseCompletionRequest(parsed, Limits(), *tokenizer_, out ? out : &local);
  }
  std::optional<ApiError> Chat(const std::string& body, ParsedGeneration* out = nullptr) {
    json parsed;
    if (auto e = ParseJsonObject(body, &parsed)) return e;
    ParsedGeneration local;
    return ParseChatRequest(parsed, Limits(), *tokenizer_, *chat_template_, out ? out : &local);
  }

  static Tokenizer* tokenizer_;
  static ChatTemplate* chat_template_;
};

Tokenizer* OpenAiProtocolTest::tokenizer_ = nullptr;
ChatTemplate* OpenAiProtocolTest::chat_template_ = nullptr;

TEST_F(OpenAiProtocolTest, CompletionFields) {
  ParsedGeneration out;
  ASSERT_EQ(Completion(R"({"model": "default", "prompt": "Hello world", "max_tokens": 5,
                          "temperature": 0.5, "top_p": 0.9, "top_k": 7, "seed": 42,
                          "stop": ["\n", "."], "stream": true, "ignore_eos": true, "n": 1})",
                       &out),
            std::nullopt);
  EXPECT_EQ(out.request.prompt, *tokenizer_->Encode("Hello world", true));
  EXPECT_EQ(out.request.max_tokens, 5);
  EXPECT_FLOAT_EQ(out.request.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(out.request.sampling.top_p, 0.9f);
  EXPECT_EQ(out.request.sampling.top_k, 7);
  EXPECT_EQ(out.request.sampling.seed, 42u);
  EXPECT_EQ(out.request.stop, (std::vector<std::string>{"\n", "."}));
  EXPECT_TRUE(out.stream);
  EXPECT_TRUE(out.request.ignore_eos);
}

TEST_F(OpenAiProtocolTest, CompletionDefaults) {
  ParsedGeneration out;
  ASSERT_EQ(Completion(R"({"prompt": [1, 2, 3], "stop": "x", "temperature": null})", &out),
            std::nullopt);
  EXPECT_EQ(out.request.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(out.request.max_tokens, 16);
  EXPECT_EQ(out.request.stop, std::vector<std::string>{"x"});
  EXPECT_FALSE(out.stream);
  EXPECT_FALSE(out.request.sampling.seed.has_value());
  // The default max_tokens shrinks to what the context has room for.
  std::string long_prompt = "[";
  for (int i = 0; i < 60; ++i) long_prompt += std::to_string(i + 1) + (i < 59 ? "," : "]");
  ASSERT_EQ(Completion(R"({"prompt": )" + long_prompt + "}", &out), std::nullopt);
  EXPECT_EQ(out.request.max_tokens, 4);
  // A batch of one prompt is that prompt.
  ASSERT_EQ(Completion(R"({"prompt": [[5, 6]]})", &out), std::nullopt);
  EXPECT_EQ(out.request.prompt, (std::vector<int32_t>{5, 6}));
}

struct BadCase {
  const char* body;
  int status;
  const char* param;  // "" for null
  const char* code;   // "" for null
};

TEST_F(OpenAiProtocolTest, ModelMayBeAnyServedNameOrDefaultOrAbsent) {
  for (const char* model : {"tiny-moe", "alias", "default"}) {
    EXPECT_EQ(Completion(absl::StrCat(R"({"model": ")", model, R"(", "prompt": "hi"})")),
              std::nullopt)
        << model;
    EXPECT_EQ(Chat(absl::StrCat(R"({"model": ")", model,
                                R"(", "messages": [{"role": "user", "content": "hi"}]})")),
              std::nullopt)
        << model;
  }
  EXPECT_EQ(Completion(R"({"prompt": "hi"})"), std::nullopt);
  const std::optional<ApiError> e = Completion(R"({"model": "tiny", "prompt": "hi"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 404);
  EXPECT_EQ(e->code, "model_not_found");
  EXPECT_EQ(e->message,
            "The model 'tiny' does not exist; this server serves 'tiny-moe', 'alias' (or "
            "'default')");
}

TEST_F(OpenAiProtocolTest, UnsetSamplingFieldsTakeTheModelsDefaults) {
  ModelLimits limits = Limits();
  limits.default_sampling.temperature = 0.6f;
  limits.default_sampling.top_p = 0.95f;
  limits.default_sampling.top_k = 20;
  auto parse = [&](const std::string& body) {
    json parsed = json::parse(body);
    ParsedGeneration out;
    EXPECT_EQ(ParseCompletionRequest(parsed, limits, *tokenizer_, &out), std::nullopt) << body;
    return out.request.sampling;
  };
  SamplingParams unset = parse(R"({"prompt": "hi"})");
  EXPECT_FLOAT_EQ(unset.temperature, 0.6f);
  EXPECT_FLOAT_EQ(unset.top_p, 0.95f);
  EXPECT_EQ(unset.top_k, 20);
  SamplingParams set = parse(R"({"prompt": "hi", "temperature": 0, "top_p": 1, "top_k": 0})");
  EXPECT_FLOAT_EQ(set.temperature, 0.f);
  EXPECT_FLOAT_EQ(set.top_p, 1.f);
  EXPECT_EQ(set.top_k, 0);
}

TEST_F(OpenAiProtocolTest, RoutingIsParsedOnBothEndpoints) {
  ParsedGeneration out;
  ASSERT_EQ(Completion(R"({"prompt": "hi", "routing": {"top_k": 8}})", &out), std::nullopt);
  EXPECT_EQ(out.request.routing.top_k, 8);
  EXPECT_EQ(out.request.routing.top_p, 0.f);
  ASSERT_EQ(Chat(R"({"messages": [{"role": "user", "content": "hi"}],
                     "routing": {"top_p": 0.4}})",
                 &out),
            std::nullopt);
  EXPECT_FLOAT_EQ(out.request.routing.top_p, 0.4f);
  EXPECT_EQ(out.request.routing.top_k, 0);
  ASSERT_EQ(Completion(R"({"prompt": "hi", "routing": null})", &out), std::nullopt);
  EXPECT_FALSE(out.request.routing.any());
  // Below float's range P is still set (the smallest positive float), never "unset".
  ASSERT_EQ(Completion(R"({"prompt": "hi", "routing": {"top_p": 1e-60}})", &out), std::nullopt);
  EXPECT_GT(out.request.routing.top_p, 0.f);
}

TEST_F(OpenAiProtocolTest, SelfContrastTakesItsDefaultsAndItsFields) {
  ParsedGeneration out;
  ASSERT_EQ(Completion(R"({"prompt": "hi", "self_contrast": {}})", &out), std::nullopt);
  ASSERT_TRUE(out.request.self_contrast.has_value());
  EXPECT_FLOAT_EQ(out.request.self_contrast->alpha, 0.1f);
  EXPECT_FLOAT_EQ(out.request.self_contrast->beta, 0.5f);
  EXPECT_EQ(out.request.self_contrast->weak_rank, 2);
  EXPECT_FALSE(out.request.self_contrast->ban_eos);
  ASSERT_EQ(Chat(R"({"messages": [{"role": "user", "content": "hi"}],
                     "self_contrast": {"alpha": 1, "beta": 0, "weak_rank": 8, "ban_eos": true},
                     "routing": {"top_k": 3}})",
                 &out),
            std::nullopt);
  EXPECT_FLOAT_EQ(out.request.self_contrast->alpha, 1.f);
  EXPECT_FLOAT_EQ(out.request.self_contrast->beta, 0.f);
  EXPECT_EQ(out.request.self_contrast->weak_rank, 8);
  EXPECT_TRUE(out.request.self_contrast->ban_eos);
  EXPECT_EQ(out.request.routing.top_k, 3);  // the strong pass's routing
  ASSERT_EQ(Completion(R"({"prompt": "hi", "self_contrast": null})", &out), std::nullopt);
  EXPECT_FALSE(out.request.self_contrast.has_value());
}

TEST_F(OpenAiProtocolTest, RoutingIsRefusedOnAModelWithoutRoutedExperts) {
  ModelLimits limits = Limits();
  limits.num_routed_experts = 0;
  json body = json::parse(R"({"prompt": "hi", "routing": {"top_k": 1}})");
  ParsedGeneration out;
  std::optional<ApiError> e = ParseCompletionRequest(body, limits, *tokenizer_, &out);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->param, "routing.top_k");
  EXPECT_THAT(e->message, testing::HasSubstr("no routed experts"));
  body = json::parse(R"({"prompt": "hi", "self_contrast": {}})");
  e = ParseCompletionRequest(body, limits, *tokenizer_, &out);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->param, "self_contrast");
  EXPECT_THAT(e->message, testing::HasSubstr("no routed experts"));
}

TEST_F(OpenAiProtocolTest, BadCompletionsAreRefused) {
  const BadCase cases[] = {
      {R"({"prompt": "hi")", 400, "", "invalid_json"},
      {R"([1, 2])", 400, "", "invalid_json"},
      {"{\"prompt\": \"\xff\xfe\"}", 400, "", "invalid_json"},  // invalid UTF-8
      {R"({"prompt": "\udc80"})", 400, "", "invalid_json"},     // lone surrogate
      {R"({"model": "gpt-4", "prompt": "hi"})", 404, "model", "model_not_found"},
      {R"({"prompt": "hi", "stream_options": {"include_usage": true}})", 400, "stream_options", ""},
      {R"({"prompt": "hi", "stream": true, "stream_options": {"include_usage": 1}})", 400,
       "include_usage", ""},
      {R"({"prompt": "hi", "stream": true, "stream_options": true})", 400, "stream_options", ""},
      {R"({"prompt": "hi", "self_contrast": 1})", 400, "self_contrast", ""},
      {R"({"prompt": "hi", "self_contrast": {"gamma": 1}})", 400, "self_contrast", ""},
      {R"({"prompt": "hi", "self_contrast": {"beta": -0.1}})", 400, "self_contrast.beta", ""},
      {R"({"prompt": "hi", "self_contrast": {"beta": "big"}})", 400, "self_contrast.beta", ""},
      {R"({"prompt": "hi", "self_contrast": {"alpha": 0}})", 400, "self_contrast.alpha", ""},
      {R"({"prompt": "hi", "self_contrast": {"alpha": 1.5}})", 400, "self_contrast.alpha", ""},
      {R"({"prompt": "hi", "self_contrast": {"weak_rank": 0}})", 400, "self_contrast.weak_rank",
       ""},
      {R"({"prompt": "hi", "self_contrast": {"weak_rank": 9}})", 400, "self_contrast.weak_rank",
       ""},
      {R"({"prompt": "hi", "self_contrast": {"weak_rank": 2.5}})", 400, "self_contrast.weak_rank",
       ""},
      {R"({"prompt": "hi", "self_contrast": {"ban_eos": "yes"}})", 400, "self_contrast.ban_eos",
       ""},
      {R"({"model": 3, "prompt": "hi"})", 400, "model", ""},
      {R"({})", 400, "prompt", ""},
      {R"({"prompt": ""})", 400, "prompt", ""},
      {R"({"prompt": []})", 400, "prompt", ""},
      {R"({"prompt": 12})", 400, "prompt", ""},
      {R"({"prompt": ["a", "b"]})", 400, "prompt", ""},
      {R"({"prompt": [1, "a"]})", 400, "prompt", ""},
      {R"({"prompt": [1, 2.5]})", 400, "prompt", ""},
      {R"({"prompt": [4096]})", 400, "prompt", ""},
      {R"({"prompt": [-1]})", 400, "prompt", ""},
      {R"({"prompt": [99999999999999]})", 400, "prompt", ""},
      {R"({"prompt": "hi", "max_tokens": 0})", 400, "max_tokens", ""},
      {R"({"prompt": "hi", "max_tokens": -3})", 400, "max_tokens", ""},
      {R"({"prompt": "hi", "max_tokens": "5"})", 400, "max_tokens", ""},
      {R"({"prompt": "hi", "max_tokens": 2.5})", 400, "max_tokens", ""},
      {R"({"prompt": "hi", "max_tokens": 64})", 400, "max_tokens", "context_length_exceeded"},
      {R"({"prompt": "hi", "max_tokens": 1000000})", 400, "max_tokens", ""},
      {R"({"prompt": "hi", "temperature": -0.1})", 400, "temperature", ""},
      {R"({"prompt": "hi", "temperature": "hot"})", 400, "temperature", ""},
      {R"({"prompt": "hi", "top_p": 0})", 400, "top_p", ""},
      {R"({"prompt": "hi", "top_p": 1.5})", 400, "top_p", ""},
      {R"({"prompt": "hi", "top_p": -1})", 400, "top_p", ""},
      {R"({"prompt": "hi", "top_k": -2})", 400, "top_k", ""},
      {R"({"prompt": "hi", "seed": "x"})", 400, "seed", ""},
      {R"({"prompt": "hi", "seed": 1.5})", 400, "seed", ""},
      {R"({"prompt": "hi", "stop": 5})", 400, "stop", ""},
      {R"({"prompt": "hi", "stop": ["a", 5]})", 400, "stop", ""},
      {R"({"prompt": "hi", "stop": [""]})", 400, "stop", ""},
      {R"({"prompt": "hi", "stream": "yes"})", 400, "stream", ""},
      {R"({"prompt": "hi", "ignore_eos": 1})", 400, "ignore_eos", ""},
      {R"({"prompt": "hi", "n": 2})", 400, "n", ""},
      {R"({"prompt": "hi", "best_of": 3})", 400, "best_of", ""},
      {R"({"prompt": "hi", "logprobs": 2})", 400, "logprobs", ""},
      {R"({"prompt": "hi", "echo": true})", 400, "echo", ""},
      {R"({"prompt": "hi", "presence_penalty": 0.5})", 400, "presence_penalty", ""},
      {R"({"prompt": "hi", "logit_bias": {"1": 5}})", 400, "logit_bias", ""},
      {R"({"prompt": "hi", "routing": 4})", 400, "routing", ""},
      {R"({"prompt": "hi", "routing": {}})", 400, "routing", ""},
      {R"({"prompt": "hi", "routing": {"top_k": 2, "top_p": 0.5}})", 400, "routing", ""},
      {R"({"prompt": "hi", "routing": {"top_n": 2}})", 400, "routing", ""},
      {R"({"prompt": "hi", "routing": {"top_k": 0}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_k": 9}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_k": -1}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_k": 1.5}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_k": "2"}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_k": 99999999999}})", 400, "routing.top_k", ""},
      {R"({"prompt": "hi", "routing": {"top_p": 0}})", 400, "routing.top_p", ""},
      {R"({"prompt": "hi", "routing": {"top_p": 1.01}})", 400, "routing.top_p", ""},
      {R"({"prompt": "hi", "routing": {"top_p": -0.5}})", 400, "routing.top_p", ""},
      {R"({"prompt": "hi", "routing": {"top_p": "0.4"}})", 400, "routing.top_p", ""},
  };
  for (const BadCase& c : cases) {
    std::optional<ApiError> e = Completion(c.body);
    ASSERT_TRUE(e.has_value()) << c.body;
    EXPECT_EQ(e->status, c.status) << c.body << ": " << e->message;
    EXPECT_EQ(e->param, c.param) << c.body << ": " << e->message;
    EXPECT_EQ(e->code, c.code) << c.body << ": " << e->message;
    EXPECT_FALSE(e->message.empty()) << c.body;
  }
}

TEST_F(OpenAiProtocolTest, PromptLongerThanTheContext) {
  std::string prompt;
  for (int i = 0; i < 200; ++i) prompt += " word";
  std::optional<ApiError> e = Completion(json{{"prompt", prompt}}.dump());
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->param, "prompt");
  EXPECT_EQ(e->code, "context_length_exceeded");
  EXPECT_NE(e->message.find("context of 64"), std::string::npos) << e->message;
}

TEST_F(OpenAiProtocolTest, Chat) {
  ParsedGeneration out;
  ASSERT_EQ(Chat(R"({"model": "default", "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                     "max_completion_tokens": 3})",
                 &out),
            std::nullopt);
  EXPECT_EQ(out.request.prompt,
            *tokenizer_->Encode("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
                                "<|im_end|>\n<|im_start|>assistant\n",
                                false));
  EXPECT_EQ(out.request.max_tokens, 3);
  EXPECT_EQ(out.request.stop_token_ids, std::vector<int32_t>{*tokenizer_->TokenToId("<|im_end|>")});
  // Without max_tokens chat may use the rest of the context.
  ASSERT_EQ(Chat(R"({"messages": [{"role": "user", "content": "Hi"}]})", &out), std::nullopt);
  EXPECT_EQ(out.request.max_tokens, 64 - static_cast<int>(out.request.prompt.size()));
}

TEST_F(OpenAiProtocolTest, BadChatsAreRefused) {
  const BadCase cases[] = {
      {R"({"messages": "hi"})", 400, "messages", ""},
      {R"({"messages": []})", 400, "messages", ""},
      {R"({})", 400, "messages", ""},
      {R"({"messages": [5]})", 400, "messages[0]", ""},
      {R"({"messages": [{"content": "hi"}]})", 400, "messages[0].role", ""},
      {R"({"messages": [{"role": "wizard", "content": "hi"}]})", 400, "messages[0].role", ""},
      {R"({"messages": [{"role": 1, "content": "hi"}]})", 400, "messages[0].role", ""},
      {R"({"messages": [{"role": "user"}]})", 400, "messages[0].content", ""},
      {R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content", ""},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400,
       "messages[0].content", ""},
      {R"({"messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]})", 400,
       "messages[0].content", ""},
      {R"({"model": "x", "messages": [{"role": "user", "content": "hi"}]})", 404, "model",
       "model_not_found"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})", 400, "max_tokens",
       ""},
      {R"({"messages": [{"role": "user", "content": "hi"}], "top_p": 2})", 400, "top_p", ""},
      {R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})", 400,
       "tools", ""},
      {R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": 1}})", 400,
       "response_format", ""},
  };
  for (const BadCase& c : cases) {
    std::optional<ApiError> e = Chat(c.body);
    ASSERT_TRUE(e.has_value()) << c.body;
    EXPECT_EQ(e->status, c.status) << c.body << ": " << e->message;
    EXPECT_EQ(e->param, c.param) << c.body << ": " << e->message;
    EXPECT_EQ(e->code, c.code) << c.body << ": " << e->message;
  }
}

TEST_F(OpenAiProtocolTest, UnsupportedChatTemplate) {
  ChatTemplate none = ChatTemplate::FromTemplate("", "", "");
  json body = json::parse(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ParsedGeneration out;
  std::optional<ApiError> e = ParseChatRequest(body, Limits(), *tokenizer_, none, &out);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->code, "unsupported_chat_template");
  EXPECT_NE(e->message.find("not supported"), std::string::npos) << e->message;
}

TEST_F(OpenAiProtocolTest, TokenizeAndDetokenize) {
  std::string text;
  bool add = false;
  ASSERT_EQ(ParseTokenizeRequest(json{{"text", "abc"}}, Limits(), &text, &add), std::nullopt);
  EXPECT_EQ(text, "abc");
  EXPECT_TRUE(add);
  EXPECT_TRUE(ParseTokenizeRequest(json{{"prompt", 5}}, Limits(), &text, &add).has_value());
  EXPECT_TRUE(ParseTokenizeRequest(json::object(), Limits(), &text, &add).has_value());
  std::vector<int32_t> ids;
  bool skip = true;
  ASSERT_EQ(ParseDetokenizeRequest(json{{"tokens", {1, 2}}}, Limits(), &ids, &skip), std::nullopt);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(skip);
  std::optional<ApiError> e =
      ParseDetokenizeRequest(json{{"tokens", {1, 5000}}}, Limits(), &ids, &skip);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->param, "tokens");
  EXPECT_TRUE(ParseDetokenizeRequest(json{{"tokens", "1 2"}}, Limits(), &ids, &skip));
}

TEST(OpenAiErrorTest, EngineStatusesAndBody) {
  ApiError full = ApiErrorFromStatus(absl::ResourceExhaustedError("queue is full"));
  EXPECT_EQ(full.status, 429);
  EXPECT_EQ(full.code, "queue_full");
  ApiError draining = ApiErrorFromStatus(absl::UnavailableError("draining"));
  EXPECT_EQ(draining.status, 503);
  json body = ErrorBody(ApiError{404, "no such model", "model", "model_not_found"});
  EXPECT_EQ(body, json::parse(R"({"error": {"message": "no such model",
      "type": "not_found_error", "param": "model", "code": "model_not_found"}})"));
  body = ErrorBody(ApiError{400, "bad", "", ""});
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_TRUE(body["error"]["code"].is_null());
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace moe::server
