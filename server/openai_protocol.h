// The OpenAI-compatible request bodies: JSON -> validated engine requests, and the error
// body. Pure functions (no engine, no sockets) so every bad input has a table test
// (tests/server/openai_protocol_test.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "scheduler/serving_engine.h"
#include "server/chat_template.h"

namespace moe {
class Tokenizer;
}

namespace moe::server {

// An error as the API reports it: HTTP status and the OpenAI body
// {"error": {"message", "type", "param", "code"}}. Empty param / code are null.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;
  std::string code;
};

// A canonical status from the engine (Submit) as an ApiError: the status code through
// status_mapping; codes "queue_full" (429) and "server_unavailable" (503).
ApiError ApiErrorFromStatus(const absl::Status& status);
// {"error": {...}} with type from OpenAiErrorType(status).
nlohmann::json ErrorBody(const ApiError& error);

// What validation needs to know about the served model.
struct ModelLimits {
  // The names requests may give as "model" (the first is the one responses carry);
  // "default" is accepted too, this being a one-model server. Any other name, or none
  // listed here, gets 404 model_not_found.
  std::vector<std::string> served_names;
  int context = 0;                  // max_position_embeddings: prompt + max_tokens <= context
  int vocab_size = 0;               // token ids in [0, vocab_size)
  int num_routed_experts = 0;       // E, for "routing": {"top_k": N <= E}; 0: no MoE layers
  int max_tokens_limit = 0;         // cap on max_tokens (0: the context); also the chat default
  int default_max_tokens = 16;      // /v1/completions without max_tokens (OpenAI's default)
  SamplingParams default_sampling;  // unset temperature/top_p/top_k (ServingLimits')
};

// Whether a request's "model" names this server's model (see served_names).
bool IsServedModelName(const ModelLimits& limits, std::string_view name);

struct ParsedGeneration {
  GenerateRequest request;  // id left empty
  bool stream = false;
  // stream_options.include_usage: a stream ends with a chunk of empty choices carrying
  // the usage, and every chunk before it has "usage": null (as OpenAI sends it).
  // Without it a stream carries no usage.
  bool include_usage = false;
};

// The body as a JSON object; malformed JSON (invalid UTF-8 included) or a non-object is
// a 400 with code "invalid_json".
std::optional<ApiError> ParseJsonObject(std::string_view body, nlohmann::json* out);

// POST /v1/completions. On success fills `out` and returns nullopt.
std::optional<ApiError> ParseCompletionRequest(const nlohmann::json& body,
                                               const ModelLimits& limits,
                                               const Tokenizer& tokenizer, ParsedGeneration* out);

// POST /v1/chat/completions: messages rendered with `chat_template`, its turn-end
// tokens added as stop token ids.
std::optional<ApiError> ParseChatRequest(const nlohmann::json& body, const ModelLimits& limits,
                                         const Tokenizer& tokenizer,
                                         const ChatTemplate& chat_template, ParsedGeneration* out);

// POST /tokenize: {"prompt" | "text": string, "add_special_tokens": bool = true}.
std::optional<ApiError> ParseTokenizeRequest(const nlohmann::json& body, const ModelLimits& limits,
                                             std::string* text, bool* add_special_tokens);

// POST /detokenize: {"tokens": [ids], "skip_special_tokens": bool = false}.
std::optional<ApiError> ParseDetokenizeRequest(const nlohmann::json& body,
                                               const ModelLimits& limits, std::vector<int32_t>* ids,
                                               bool* skip_special_tokens);

// "stop" / "length" / "abort".
std::string_view FinishReasonName(StopReason reason);

}  // namespace moe::server
