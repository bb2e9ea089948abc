#include "server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "engine/loader.h"
#include "server/status_mapping.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {
namespace {

using json = nlohmann::json;

ApiError Invalid(std::string param, std::string message, std::string code = "") {
  return ApiError{400, std::move(message), std::move(param), std::move(code)};
}

// The field, or nullptr when it is absent or null (OpenAI treats null as unset).
const json* Field(const json& obj, const std::string& name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> GetInt(const json& obj, const std::string& name,
                               std::optional<int64_t>* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned()) {
    if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(name, absl::StrCat(ToAbsl(name), " is too large"));
    }
    *out = static_cast<int64_t>(v->get<uint64_t>());
  } else if (v->is_number_integer()) {
    *out = v->get<int64_t>();
  } else if (v->is_number_float()) {
    // 16.0 is accepted as 16; 16.5 is not an integer.
    const double d = v->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) {
      return Invalid(name, absl::StrCat(ToAbsl(name), " must be an integer, got ", d));
    }
    *out = static_cast<int64_t>(d);
  } else {
    return Invalid(name, absl::StrCat(ToAbsl(name), " must be an integer, got ", v->type_name()));
  }
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const json& obj, const std::string& name,
                                  std::optional<double>* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>())) {
    return Invalid(name, absl::StrCat(ToAbsl(name), " must be a number, got ", v->type_name()));
  }
  *out = v->get<double>();
  return std::nullopt;
}

std::optional<ApiError> GetBool(const json& obj, const std::string& name, bool* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    return Invalid(name, absl::StrCat(ToAbsl(name), " must be a boolean, got ", v->type_name()));
  }
  *out = v->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> GetString(const json& obj, const std::string& name,
                                  std::optional<std::string>* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    return Invalid(name, absl::StrCat(ToAbsl(name), " must be a string, got ", v->type_name()));
  }
  *out = v->get<std::string>();
  return std::nullopt;
}

bool IsListed(const ModelLimits& limits, std::string_view name) {
  return std::find(limits.served_names.begin(), limits.served_names.end(), name) !=
         limits.served_names.end();
}

}  // namespace

bool IsServedModelName(const ModelLimits& limits, std::string_view name) {
  return name == "default" || IsListed(limits, name);
}

namespace {

std::optional<ApiError> CheckModel(const json& body, const ModelLimits& limits) {
  std::optional<std::string> model;
  if (auto e = GetString(body, "model", &model)) return e;
  if (model && !IsServedModelName(limits, *model)) {
    std::string names;
    for (const std::string& name : limits.served_names) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", "'", ToAbsl(name), "'");
    }
    return ApiError{
        404,
        absl::StrCat("The model '", ToAbsl(*model), "' does not exist; this server ", "serves ",
                     names, IsListed(limits, "default") ? "" : " (or 'default')"),
        "model", "model_not_found"};
  }
  return std::nullopt;
}

// Token ids of a JSON array, each an integer in [0, vocab_size).
std::optional<ApiError> GetTokenIds(const json& array, const std::string& param,
                                    const ModelLimits& limits, std::vector<int32_t>* ids) {
  ids->clear();
  ids->reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const json& v = array[i];
    if (!v.is_number_integer()) {
      return Invalid(param, absl::StrCat(ToAbsl(param), "[", i,
                                         "] must be an integer token id, got ", v.type_name()));
    }
    const bool negative = !v.is_number_unsigned() && v.get<int64_t>() < 0;
    if (negative || v.get<uint64_t>() >= static_cast<uint64_t>(limits.vocab_size)) {
      return Invalid(param,
                     absl::StrCat(ToAbsl(param), "[", i, "] = ", v.dump(),
                                  " is outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
    ids->push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return std::nullopt;
}

// Options no engine path implements: refused when set to anything but their default,
// rather than silently ignored.
std::optional<ApiError> RejectUnsupported(const json& body) {
  auto set = [&](const char* name) { return Field(body, name) != nullptr; };
  auto nonzero = [&](const char* name) {
    const json* v = Field(body, name);
    return v != nullptr && !(v->is_number() && v->get<double>() == 0.0);
  };
  auto truthy = [&](const char* name) {
    const json* v = Field(body, name);
    return v != nullptr && !(v->is_boolean() && !v->get<bool>());
  };
  auto nonempty = [&](const char* name) {
    const json* v = Field(body, name);
    return v != nullptr && !(v->is_structured() && v->empty()) &&
           !(v->is_string() && v->get<std::string>().empty());
  };
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (nonzero(name)) return Invalid(name, absl::StrCat(name, " is not supported"));
  }
  for (const char* name : {"logprobs", "echo"}) {
    if (truthy(name)) return Invalid(name, absl::StrCat(name, " is not supported"));
  }
  if (nonzero("top_logprobs")) return Invalid("top_logprobs", "top_logprobs is not supported");
  for (const char* name : {"logit_bias", "suffix", "tools", "functions"}) {
    if (nonempty(name)) return Invalid(name, absl::StrCat(name, " is not supported"));
  }
  if (set("best_of")) {
    std::optional<int64_t> best_of;
    if (auto e = GetInt(body, "best_of", &best_of)) return e;
    if (*best_of != 1) return Invalid("best_of", "best_of must be 1 if given");
  }
  if (const json* format = Field(body, "response_format")) {
    const json* type = format->is_object() ? Field(*format, "type") : nullptr;
    if (!format->is_object() || (type != nullptr && *type != "text")) {
      return Invalid("response_format", "only response_format {\"type\": \"text\"} is supported");
    }
  }
  return std::nullopt;
}

// An error of a field inside the object `parent`: "top_k must be ..." becomes
// "routing.top_k must be ..." with param routing.top_k.
std::optional<ApiError> Nested(std::string_view parent, std::optional<ApiError> e) {
  if (e) {
    e->param = absl::StrCat(ToAbsl(parent), ".", e->param);
    e->message = absl::StrCat(ToAbsl(parent), ".", e->message);
  }
  return e;
}

// The extension "routing": {"top_k": N} or {"top_p": P} (one of the two): this request's
// tokens use N experts, or the smallest set whose router mass exceeds P, in every MoE
// layer. The engine checks it again (ValidateRouting); here the error names the field.
std::optional<ApiError> GetRouting(const json& body, const ModelLimits& limits,
                                   RoutingOverride* routing) {
  const json* v = Field(body, "routing");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) {
    return Invalid("routing", absl::StrCat("routing must be an object such as {\"top_k\": 4} or ",
                                           "{\"top_p\": 0.4}, got ", v->type_name()));
  }
  for (const auto& [key, value] : v->items()) {
    if (key != "top_k" && key != "top_p") {
      return Invalid("routing",
                     absl::StrCat("routing has no field '", ToAbsl(key), "' (top_k or top_p)"));
    }
  }
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  if (auto e = Nested("routing", GetInt(*v, "top_k", &top_k))) return e;
  if (auto e = Nested("routing", GetNumber(*v, "top_p", &top_p))) return e;
  absl::StatusOr<RoutingOverride> requested =
      RequestedRouting(top_k, top_p, limits.num_routed_experts);
  if (!requested.ok()) {
    const char* param = top_k.has_value() == top_p.has_value() ? "routing"
                        : top_k                                ? "routing.top_k"
                                                               : "routing.top_p";
    return Invalid(param, std::string(requested.status().message()));
  }
  *routing = *requested;
  return std::nullopt;
}

// The extension "self_contrast": {"alpha": 0.1, "beta": 0.5, "weak_rank": 2, "ban_eos":
// false}, every field optional (those are the defaults): SCMoE self-contrast decoding.
std::optional<ApiError> GetSelfContrast(const json& body, const ModelLimits& limits,
                                        std::optional<SelfContrastParams>* out) {
  const json* v = Field(body, "self_contrast");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) {
    return Invalid("self_contrast",
                   absl::StrCat("self_contrast must be an object such as {\"beta\": 0.5}, got ",
                                v->type_name()));
  }
  for (const auto& [key, value] : v->items()) {
    if (key != "alpha" && key != "beta" && key != "weak_rank" && key != "ban_eos") {
      return Invalid("self_contrast", absl::StrCat("self_contrast has no field '", ToAbsl(key),
                                                   "' (alpha, beta, weak_rank, ban_eos)"));
    }
  }
  std::optional<double> alpha, beta;
  std::optional<int64_t> weak_rank;
  SelfContrastParams sc;
  if (auto e = Nested("self_contrast", GetNumber(*v, "alpha", &alpha))) return e;
  if (auto e = Nested("self_contrast", GetNumber(*v, "beta", &beta))) return e;
  if (auto e = Nested("self_contrast", GetInt(*v, "weak_rank", &weak_rank))) return e;
  if (auto e = Nested("self_contrast", GetBool(*v, "ban_eos", &sc.ban_eos))) return e;
  if (alpha) sc.alpha = static_cast<float>(*alpha);
  if (beta) sc.beta = static_cast<float>(*beta);
  if (weak_rank) sc.weak_rank = static_cast<int>(std::clamp<int64_t>(*weak_rank, -1, INT32_MAX));
  if (absl::Status s = sc.Validate(limits.num_routed_experts); !s.ok()) {
    // The message starts with the field: "self_contrast.beta must be ...".
    const std::string message(s.message());
    return Invalid(message.substr(0, message.find(' ')), message);
  }
  *out = sc;
  return std::nullopt;
}

// The fields /v1/completions and /v1/chat/completions share, once the prompt is known.
// `default_max_tokens` applies when max_tokens is unset (clamped to the context).
std::optional<ApiError> ParseCommon(const json& body, const ModelLimits& limits,
                                    int default_max_tokens, ParsedGeneration* out) {
  GenerateRequest& r = out->request;
  if (auto e = RejectUnsupported(body)) return e;
  r.sampling = limits.default_sampling;

  std::optional<int64_t> n;
  if (auto e = GetInt(body, "n", &n)) return e;
  if (n && *n != 1) return Invalid("n", absl::StrCat("n must be 1 if given, got ", *n));

  const int prompt_len = static_cast<int>(r.prompt.size());
  if (prompt_len >= limits.context) {
    return Invalid("prompt",
                   absl::StrCat("the prompt is ", prompt_len, " tokens, which leaves no room in ",
                                "this model's context of ", limits.context, " tokens"),
                   "context_length_exceeded");
  }
  const int room = limits.context - prompt_len;
  const int cap = limits.max_tokens_limit > 0 ? limits.max_tokens_limit : limits.context;

  std::optional<int64_t> max_tokens;
  std::string max_tokens_name = "max_tokens";
  if (Field(body, "max_completion_tokens") != nullptr) max_tokens_name = "max_completion_tokens";
  if (auto e = GetInt(body, max_tokens_name, &max_tokens)) return e;
  if (!max_tokens) {
    r.max_tokens = std::min({default_max_tokens, room, cap});
  } else if (*max_tokens <= 0) {
    return Invalid(max_tokens_name,
                   absl::StrCat(max_tokens_name, " must be at least 1, got ", *max_tokens));
  } else if (*max_tokens > cap) {
    return Invalid(max_tokens_name, absl::StrCat(max_tokens_name, " is ", *max_tokens,
                                                 "; this server allows at most ", cap));
  } else if (*max_tokens > room) {
    return Invalid(
        max_tokens_name,
        absl::StrCat("the prompt (", prompt_len, " tokens) plus ", max_tokens_name, " (",
                     *max_tokens, ") exceeds this model's context of ", limits.context, " tokens"),
        "context_length_exceeded");
  } else {
    r.max_tokens = static_cast<int>(*max_tokens);
  }

  std::optional<double> temperature, top_p;
  if (auto e = GetNumber(body, "temperature", &temperature)) return e;
  if (temperature) {
    if (*temperature < 0) {
      return Invalid("temperature", absl::StrCat("temperature must be >= 0, got ", *temperature));
    }
    r.sampling.temperature = static_cast<float>(*temperature);
  }
  if (auto e = GetNumber(body, "top_p", &top_p)) return e;
  if (top_p) {
    if (!(*top_p > 0 && *top_p <= 1)) {
      return Invalid("top_p", absl::StrCat("top_p must be in (0, 1], got ", *top_p));
    }
    r.sampling.top_p = static_cast<float>(*top_p);
  }
  std::optional<int64_t> top_k;  // extension; -1 (vLLM's "off") and 0 both disable it
  if (auto e = GetInt(body, "top_k", &top_k)) return e;
  if (top_k) {
    if (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max()) {
      return Invalid("top_k", absl::StrCat("top_k must be >= 0 (or -1: off), got ", *top_k));
    }
    r.sampling.top_k = *top_k < 0 ? 0 : static_cast<int>(*top_k);
  }
  if (const json* seed = Field(body, "seed")) {
    if (seed->is_number_unsigned()) {
      r.sampling.seed = seed->get<uint64_t>();
    } else if (seed->is_number_integer()) {
      r.sampling.seed = static_cast<uint64_t>(seed->get<int64_t>());
    } else {
      return Invalid("seed", absl::StrCat("seed must be an integer, got ", seed->type_name()));
    }
  }

  if (const json* stop = Field(body, "stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) {
          return Invalid(
              "stop", absl::StrCat("stop[", i, "] must be a string, got ", (*stop)[i].type_name()));
        }
        r.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      return Invalid("stop", absl::StrCat("stop must be a string or an array of strings, got ",
                                          stop->type_name()));
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) return Invalid("stop", "stop strings must not be empty");
    }
  }
  if (auto e = GetBool(body, "stream", &out->stream)) return e;
  if (const json* options = Field(body, "stream_options")) {
    if (!options->is_object()) return Invalid("stream_options", "stream_options must be an object");
    if (!out->stream) {
      return Invalid("stream_options", "stream_options is only allowed with \"stream\": true");
    }
    if (auto e = GetBool(*options, "include_usage", &out->include_usage)) return e;
  }
  if (auto e = GetRouting(body, limits, &r.routing)) return e;
  if (auto e = GetSelfContrast(body, limits, &r.self_contrast)) return e;
  if (auto e = GetBool(body, "ignore_eos", &r.ignore_eos)) return e;
  if (auto e = GetBool(body, "skip_special_tokens", &r.skip_special_tokens)) return e;
  return std::nullopt;
}

std::optional<ApiError> EncodeText(const Tokenizer& tokenizer, std::string_view text,
                                   bool add_special_tokens, const std::string& param,
                                   std::vector<int32_t>* ids) {
  absl::StatusOr<std::vector<int32_t>> encoded = tokenizer.Encode(text, add_special_tokens);
  if (!encoded.ok()) return Invalid(param, std::string(encoded.status().message()));
  *ids = std::move(*encoded);
  return std::nullopt;
}

}  // namespace

ApiError ApiErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.status = HttpStatusCode(status);
  e.message = std::string(status.message());
  if (e.status == 429) e.code = "queue_full";
  if (e.status == 503) e.code = "server_unavailable";
  return e;
}

nlohmann::json ErrorBody(const ApiError& error) {
  json body = {{"message", error.message},
               {"type", std::string(OpenAiErrorType(error.status))},
               {"param", nullptr},
               {"code", nullptr}};
  if (!error.param.empty()) body["param"] = error.param;
  if (!error.code.empty()) body["code"] = error.code;
  return json{{"error", std::move(body)}};
}

std::optional<ApiError> ParseJsonObject(std::string_view body, nlohmann::json* out) {
  try {
    *out = json::parse(body);
  } catch (const json::exception& e) {  // parse_error, or out_of_range 406 (1e400)
    return Invalid("", absl::StrCat("the request body is not valid JSON: ", e.what()),
                   "invalid_json");
  }
  if (!out->is_object()) {
    return Invalid("",
                   absl::StrCat("the request body must be a JSON object, got ", out->type_name()),
                   "invalid_json");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseCompletionRequest(const nlohmann::json& body,
                                               const ModelLimits& limits,
                                               const Tokenizer& tokenizer, ParsedGeneration* out) {
  *out = ParsedGeneration{};
  if (auto e = CheckModel(body, limits)) return e;
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Invalid("prompt", "prompt is required");
  // OpenAI accepts a string, token ids, or a batch of either; one prompt per request here.
  if (prompt->is_array() && prompt->size() == 1 &&
      ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    prompt = &(*prompt)[0];
  }
  std::vector<int32_t>& ids = out->request.prompt;
  if (prompt->is_string()) {
    const std::string& text = prompt->get_ref<const std::string&>();
    if (text.empty()) return Invalid("prompt", "prompt must not be empty");
    if (auto e = EncodeText(tokenizer, text, /*add_special_tokens=*/true, "prompt", &ids)) return e;
  } else if (prompt->is_array()) {
    if (prompt->empty()) return Invalid("prompt", "prompt must not be empty");
    if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
      return Invalid("prompt", "batched prompts are not supported; send one prompt per request");
    }
    if (auto e = GetTokenIds(*prompt, "prompt", limits, &ids)) return e;
  } else {
    return Invalid("prompt", absl::StrCat("prompt must be a string or an array of token ids, got ",
                                          prompt->type_name()));
  }
  if (ids.empty()) return Invalid("prompt", "prompt must not be empty (it encodes to no tokens)");
  return ParseCommon(body, limits, limits.default_max_tokens, out);
}

std::optional<ApiError> ParseChatRequest(const nlohmann::json& body, const ModelLimits& limits,
                                         const Tokenizer& tokenizer,
                                         const ChatTemplate& chat_template, ParsedGeneration* out) {
  *out = ParsedGeneration{};
  if (auto e = CheckModel(body, limits)) return e;
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return Invalid("messages", "messages is required");
  if (!messages->is_array()) {
    return Invalid("messages",
                   absl::StrCat("messages must be an array, got ", messages->type_name()));
  }
  if (messages->empty()) return Invalid("messages", "messages must not be empty");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) {
      return Invalid(param, absl::StrCat(param, " must be an object, got ", m.type_name()));
    }
    std::optional<std::string> role;
    if (auto e = GetString(m, "role", &role)) {
      e->param = param + ".role";
      e->message = absl::StrCat(param, ".", e->message);
      return e;
    }
    if (!role) return Invalid(param + ".role", absl::StrCat(param, ".role is required"));
    // OpenAI's newer "developer" role is the system role.
    if (*role == "developer") role = "system";
    if (*role != "system" && *role != "user" && *role != "assistant") {
      return Invalid(param + ".role", absl::StrCat(param, ".role must be system, user or ",
                                                   "assistant, got '", ToAbsl(*role), "'"));
    }
    const json* content = Field(m, "content");
    std::string text;
    if (content != nullptr && content->is_string()) {
      text = content->get<std::string>();
    } else if (content != nullptr && content->is_array()) {
      // Content parts: only text parts, concatenated.
      for (const json& part : *content) {
        const json* type = part.is_object() ? Field(part, "type") : nullptr;
        const json* part_text = part.is_object() ? Field(part, "text") : nullptr;
        if (type == nullptr || *type != "text" || part_text == nullptr || !part_text->is_string()) {
          return Invalid(param + ".content",
                         absl::StrCat(param, ".content parts must be {\"type\": \"text\", ",
                                      "\"text\": string}; other part types are not supported"));
        }
        text += part_text->get<std::string>();
      }
    } else {
      return Invalid(param + ".content",
                     absl::StrCat(param, ".content must be a string, got ",
                                  content == nullptr ? "null" : content->type_name()));
    }
    chat.push_back(ChatMessage{std::move(*role), std::move(text)});
  }
  absl::StatusOr<std::string> rendered = chat_template.Render(chat);
  if (!rendered.ok()) {
    const bool unsupported = chat_template.family() == ChatTemplate::Family::kUnsupported;
    return Invalid("messages", std::string(rendered.status().message()),
                   unsupported ? "unsupported_chat_template" : "");
  }
  if (auto e = EncodeText(tokenizer, *rendered, /*add_special_tokens=*/false, "messages",
                          &out->request.prompt)) {
    return e;
  }
  if (out->request.prompt.empty()) return Invalid("messages", "the rendered prompt is empty");
  for (const std::string& token : chat_template.turn_end_tokens()) {
    if (std::optional<int32_t> id = tokenizer.TokenToId(token)) {
      out->request.stop_token_ids.push_back(*id);
    }
  }
  // Chat has no OpenAI default length: generate up to the context (or the server's cap).
  return ParseCommon(body, limits, std::numeric_limits<int>::max(), out);
}

std::optional<ApiError> ParseTokenizeRequest(const nlohmann::json& body, const ModelLimits& limits,
                                             std::string* text, bool* add_special_tokens) {
  if (auto e = CheckModel(body, limits)) return e;
  std::optional<std::string> value;
  const char* name = Field(body, "prompt") != nullptr ? "prompt" : "text";
  if (auto e = GetString(body, name, &value)) return e;
  if (!value) return Invalid("prompt", "prompt (or text) is required");
  *text = std::move(*value);
  *add_special_tokens = true;
  return GetBool(body, "add_special_tokens", add_special_tokens);
}

std::optional<ApiError> ParseDetokenizeRequest(const nlohmann::json& body,
                                               const ModelLimits& limits, std::vector<int32_t>* ids,
                                               bool* skip_special_tokens) {
  if (auto e = CheckModel(body, limits)) return e;
  const json* tokens = Field(body, "tokens");
  if (tokens == nullptr) return Invalid("tokens", "tokens is required");
  if (!tokens->is_array()) {
    return Invalid("tokens",
                   absl::StrCat("tokens must be an array of token ids, got ", tokens->type_name()));
  }
  if (auto e = GetTokenIds(*tokens, "tokens", limits, ids)) return e;
  *skip_special_tokens = false;
  return GetBool(body, "skip_special_tokens", skip_special_tokens);
}

std::string_view FinishReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kStop:
      return "stop";
    case StopReason::kLength:
      return "length";
    case StopReason::kAbort:
      return "abort";
  }
  return "abort";
}

}  // namespace moe::server
