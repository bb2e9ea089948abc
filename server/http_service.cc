#include "server/http_service.h"

#include <httplib.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <mutex>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "scheduler/serving_engine.h"
#include "server/api_keys.h"
#include "server/chat_template.h"
#include "server/openai_protocol.h"
#include "server/status_mapping.h"
#include "tokenizer/tokenizer.h"

namespace moe::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// How long one wait on a request stream blocks; bounds how late a disconnect or a
// timeout is noticed.
constexpr std::chrono::milliseconds kPollInterval{100};

// Never throws: text deltas are valid UTF-8 by contract, but a bad byte must not turn
// into an exception (and a 500) mid-stream.
std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void WriteJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void WriteError(httplib::Response& res, const ApiError& error) {
  WriteJson(res, error.status, ErrorBody(error));
}

std::string NewId(std::string_view prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t bits;
  {
    std::lock_guard<std::mutex> lock(mu);
    bits = rng();
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(bits));
  return absl::StrCat(ToAbsl(prefix), hex);
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

json UsageJson(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

// The identity of one response: its id, kind and creation time, shared by its chunks.
struct ResponseHeader {
  bool chat = false;
  std::string id;
  int64_t created = 0;
  std::string model;
  bool include_usage = false;  // stream_options.include_usage

  json Object(std::string_view object, json choice) const {
    return {{"id", id},
            {"object", object},
            {"created", created},
            {"model", model},
            {"choices", json::array({std::move(choice)})}};
  }

  // The non-streaming response.
  json Full(const std::string& text, std::string_view finish, const Usage& usage) const {
    json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    json body = Object(chat ? "chat.completion" : "text_completion", std::move(choice));
    body["usage"] = UsageJson(usage);
    return body;
  }

  // One SSE chunk. `finish` null: a content chunk; else the one with the finish reason.
  // With stream_options.include_usage every chunk has "usage": null.
  json Chunk(json delta_or_text, json finish) const {
    json choice = {{"index", 0}, {"finish_reason", std::move(finish)}, {"logprobs", nullptr}};
    choice[chat ? "delta" : "text"] = std::move(delta_or_text);
    json body = Object(chat ? "chat.completion.chunk" : "text_completion", std::move(choice));
    if (include_usage) body["usage"] = nullptr;
    return body;
  }

  // The last chunk of a stream with stream_options.include_usage: no choices, the usage.
  json UsageChunk(const Usage& usage) const {
    return {{"id", id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", json::array()},
            {"usage", UsageJson(usage)}};
  }
};

// The one method each route answers (GET routes answer HEAD too), or nullptr for a path
// that is no route: a known path asked with another method gets 405 with this as Allow.
const char* AllowedMethod(const std::string& path) {
  static const std::pair<const char*, const char*> kRoutes[] = {
      {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
      {"/tokenize", "POST"},       {"/detokenize", "POST"},
      {"/v1/models", "GET"},       {"/health", "GET"},
      {"/ready", "GET"},           {"/metrics", "GET"}};
  for (const auto& [route, method] : kRoutes) {
    if (path == route) return method;
  }
  if (path.rfind("/v1/models/", 0) == 0 && path.size() > 11) return "GET";
  return nullptr;
}

std::string SseData(const json& value) { return absl::StrCat("data: ", Dump(value), "\n\n"); }

// The state of one SSE response, driven by httplib's chunked content provider on the
// connection's worker thread.
class SseWriter {
 public:
  // `in_flight` is decremented when the response ends.
  SseWriter(std::shared_ptr<RequestStream> stream, ResponseHeader header,
            std::chrono::milliseconds keepalive, std::atomic<int>* in_flight)
      : stream_(std::move(stream)),
        header_(std::move(header)),
        keepalive_(keepalive),
        in_flight_(in_flight) {}

  // One call of the content provider: waits up to kPollInterval for events and writes
  // what arrived. False (the connection is dropped) when a write fails: the client is
  // gone, so the request is cancelled.
  bool Pump(httplib::DataSink& sink) {
    std::string payload;
    if (header_.chat && !sent_role_) {
      payload = SseData(header_.Chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
      sent_role_ = true;
    }
    std::optional<StreamEvent> event =
        payload.empty() ? stream_->Next(kPollInterval) : stream_->TryNext();
    while (event && !finished_) {
      Append(*event, &payload);
      if (!finished_) event = stream_->TryNext();
    }
    const Clock::time_point now = Clock::now();
    if (payload.empty()) {
      if (now - last_write_ < keepalive_) return true;
      payload = ": keep-alive\n\n";  // an SSE comment; clients ignore it
    }
    if (!sink.write(payload.data(), payload.size())) {
      stream_->Cancel();
      return false;
    }
    last_write_ = now;
    if (finished_) sink.done();
    return true;
  }

  // httplib's resource releaser: the response ended, written or not.
  void Release() {
    if (!finished_) stream_->Cancel();
    if (in_flight_ != nullptr) in_flight_->fetch_sub(1);
    in_flight_ = nullptr;
  }

 private:
  void Append(const StreamEvent& event, std::string* payload) {
    switch (event.kind) {
      case StreamEvent::Kind::kTokens:
        if (event.text.empty()) return;
        *payload += SseData(header_.chat ? header_.Chunk({{"content", event.text}}, nullptr)
                                         : header_.Chunk(event.text, nullptr));
        return;
      case StreamEvent::Kind::kFinish:
        *payload += SseData(header_.Chunk(header_.chat ? json::object() : json(""),
                                          FinishReasonName(event.reason)));
        if (header_.include_usage) *payload += SseData(header_.UsageChunk(event.usage));
        break;
      case StreamEvent::Kind::kError:
        *payload += SseData(ErrorBody(ApiErrorFromStatus(event.error)));
        break;
    }
    *payload += "data: [DONE]\n\n";
    finished_ = true;
  }

  std::shared_ptr<RequestStream> stream_;
  ResponseHeader header_;
  std::chrono::milliseconds keepalive_;
  std::atomic<int>* in_flight_;
  bool sent_role_ = false;
  bool finished_ = false;
  Clock::time_point last_write_ = Clock::now();
};

}  // namespace

struct HttpService::Impl {
  ServingEngine& engine;
  HttpOptions options;
  ModelLimits limits;
  int max_prompt_tokens = 0;  // the engine's cap (it checks prompts itself)
  ChatTemplate chat_template;
  int64_t started = std::time(nullptr);
  std::atomic<bool> serving{true};
  std::atomic<int> in_flight{0};

  Impl(ServingEngine& e, HttpOptions o)
      : engine(e), options(std::move(o)), chat_template(ChatTemplate::FromModelDir(e.model_dir())) {
    if (options.served_model_names.empty()) {
      options.served_model_names.push_back(BaseName(e.model_dir()));
    }
    limits.served_names = options.served_model_names;
    const ServingLimits& engine_limits = e.limits();
    limits.context = engine_limits.context_length;
    limits.vocab_size = engine_limits.vocab_size;
    limits.max_tokens_limit = engine_limits.max_tokens;
    max_prompt_tokens = engine_limits.max_prompt_tokens;
    limits.default_max_tokens = engine_limits.default_max_tokens;
    limits.default_sampling = engine_limits.default_sampling;
  }

  // The body parsed as a JSON object, or the error already written to `res`.
  bool ReadBody(const httplib::Request& req, httplib::Response& res, json* body) {
    if (req.body.size() > options.max_body_bytes) {
      WriteError(res, ApiError{413,
                               absl::StrCat("the request body is larger than ",
                                            options.max_body_bytes, " bytes"),
                               "", "request_too_large"});
      return false;
    }
    if (auto e = ParseJsonObject(req.body, body)) {
      WriteError(res, *e);
      return false;
    }
    return true;
  }

  void Generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    if (!serving) {
      return WriteError(res, ApiError{503,
                                      "the server is shutting down and accepts no new "
                                      "requests",
                                      "", "server_unavailable"});
    }
    json body;
    if (!ReadBody(req, res, &body)) return;
    ParsedGeneration parsed;
    std::optional<ApiError> error =
        chat ? ParseChatRequest(body, limits, engine.tokenizer(), chat_template, &parsed)
             : ParseCompletionRequest(body, limits, engine.tokenizer(), &parsed);
    if (error) return WriteError(res, *error);

    ResponseHeader header{chat, NewId(chat ? "chatcmpl-" : "cmpl-"), std::time(nullptr),
                          options.served_model_names.front(), parsed.include_usage};
    parsed.request.id = header.id;
    std::optional<Clock::time_point> deadline;
    if (!parsed.stream && options.request_timeout.count() > 0) {
      deadline = Clock::now() + options.request_timeout;
      parsed.request.deadline = deadline;
    }
    absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        engine.Submit(std::move(parsed.request));
    if (!stream.ok()) return WriteError(res, ApiErrorFromStatus(stream.status()));

    in_flight.fetch_add(1);
    if (parsed.stream) {
      auto writer = std::make_shared<SseWriter>(std::move(*stream), std::move(header),
                                                options.keepalive_interval, &in_flight);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [writer](size_t /*offset*/, httplib::DataSink& sink) { return writer->Pump(sink); },
          [writer](bool /*success*/) { writer->Release(); });
      return;
    }
    struct Done {
      std::atomic<int>& in_flight;
      ~Done() { in_flight.fetch_sub(1); }
    } done{in_flight};
    Collect(**stream, header, deadline, res);
  }

  // Non-streaming: gathers the text until the finish event.
  void Collect(RequestStream& stream, const ResponseHeader& header,
               std::optional<Clock::time_point> deadline, httplib::Response& res) {
    std::string text;
    while (true) {
      std::optional<StreamEvent> event = stream.Next(kPollInterval);
      if (!event) {
        // The engine aborts the request at its deadline; the margin covers a stalled
        // engine.
        if (!deadline || Clock::now() < *deadline + std::chrono::seconds(5)) continue;
        stream.Cancel();
        return WriteError(res, ApiError{504, "the request timed out", "", "timeout"});
      }
      switch (event->kind) {
        case StreamEvent::Kind::kTokens:
          text += event->text;
          break;
        case StreamEvent::Kind::kError:
          return WriteError(res, ApiErrorFromStatus(event->error));
        case StreamEvent::Kind::kFinish:
          if (event->reason == StopReason::kAbort) {
            if (deadline && Clock::now() >= *deadline) {
              return WriteError(res, ApiError{504,
                                              absl::StrCat("the request timed out after ",
                                                           options.request_timeout.count(), " s"),
                                              "", "timeout"});
            }
            return WriteError(
                res, ApiError{503, "the request was aborted by the server", "", "aborted"});
          }
          return WriteJson(res, 200,
                           header.Full(text, FinishReasonName(event->reason), event->usage));
      }
    }
  }

  json ModelJson(const std::string& name) const {
    return {{"id", name},
            {"object", "model"},
            {"created", started},
            {"owned_by", "moe-serve"},
            // The longest sequence this server will run: the context, or less when
            // --max-prompt-tokens and --max-tokens cap it; the caps themselves beside it.
            {"max_model_len",
             std::min<int64_t>(limits.context,
                               static_cast<int64_t>(max_prompt_tokens) + limits.max_tokens_limit)},
            {"max_prompt_tokens", max_prompt_tokens},
            {"max_tokens", limits.max_tokens_limit}};
  }

  void Tokenize(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (!ReadBody(req, res, &body)) return;
    std::string text;
    bool add_special_tokens = true;
    if (auto e = ParseTokenizeRequest(body, limits, &text, &add_special_tokens)) {
      return WriteError(res, *e);
    }
    absl::StatusOr<std::vector<int32_t>> ids = engine.tokenizer().Encode(text, add_special_tokens);
    if (!ids.ok()) {
      return WriteError(res, ApiError{400, std::string(ids.status().message()), "prompt", ""});
    }
    WriteJson(res, 200,
              {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", limits.context}});
  }

  void Detokenize(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (!ReadBody(req, res, &body)) return;
    std::vector<int32_t> ids;
    bool skip_special_tokens = false;
    if (auto e = ParseDetokenizeRequest(body, limits, &ids, &skip_special_tokens)) {
      return WriteError(res, *e);
    }
    WriteJson(res, 200, {{"prompt", engine.tokenizer().Decode(ids, skip_special_tokens)}});
  }
};

HttpService::HttpService(ServingEngine& engine, HttpOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(options))) {}

HttpService::~HttpService() = default;

const std::string& HttpService::served_model_name() const {
  return impl_->options.served_model_names.front();
}

void HttpService::SetServing(bool serving) { impl_->serving = serving; }

int HttpService::in_flight() const { return impl_->in_flight.load(); }

void HttpService::Register(httplib::Server& server) {
  std::signal(SIGPIPE, SIG_IGN);
  Impl* impl = impl_.get();

  // Bad input is a 400 even when a JSON accessor we missed throws; anything else is a
  // 500 with an OpenAI body, and the server goes on.
  auto guarded = [](auto handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const json::exception& e) {
        WriteError(res, ApiError{400, absl::StrCat("invalid request: ", e.what()), "", ""});
      } catch (const std::exception& e) {
        WriteError(res, ApiError{500, absl::StrCat("internal error: ", e.what()), "", ""});
      }
    };
  };

  // API keys, checked before routing: probes and scrapes stay open.
  if (impl->options.api_keys != nullptr && impl->options.api_keys->enabled()) {
    std::shared_ptr<const ApiKeys> keys = impl->options.api_keys;
    server.set_pre_routing_handler([keys](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/health" || req.path == "/ready" || req.path == "/metrics") {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      const bool sent = req.has_header("Authorization");
      if (sent && keys->Allows(req.get_header_value("Authorization"))) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      res.set_header("WWW-Authenticate", "Bearer");
      WriteError(res, ApiError{401,
                               sent ? "the API key is not valid"
                                    : "this server needs an API key: send 'Authorization: "
                                      "Bearer KEY'",
                               "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  server.set_payload_max_length(impl->options.max_body_bytes);
  if (impl->options.num_threads > 0) {
    const size_t n = static_cast<size_t>(impl->options.num_threads);
    server.new_task_queue = [n] { return new httplib::ThreadPool(n); };
  }
  // httplib's default sets SO_REUSEPORT, which lets a second server bind the same port
  // and silently share its connections; SO_REUSEADDR alone still allows quick restarts.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.Post("/v1/completions",
              guarded([impl](const httplib::Request& req, httplib::Response& res) {
                impl->Generate(req, res, /*chat=*/false);
              }));
  server.Post("/v1/chat/completions",
              guarded([impl](const httplib::Request& req, httplib::Response& res) {
                impl->Generate(req, res, /*chat=*/true);
              }));
  server.Get("/v1/models", [impl](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const std::string& name : impl->options.served_model_names) {
      data.push_back(impl->ModelJson(name));
    }
    WriteJson(res, 200, {{"object", "list"}, {"data", std::move(data)}});
  });
  server.Get(R"(/v1/models/(.+))", [impl](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    if (!IsServedModelName(impl->limits, name)) {
      return WriteError(
          res, ApiError{404, absl::StrCat("The model '", ToAbsl(name), "' does not exist"), "model",
                        "model_not_found"});
    }
    WriteJson(res, 200, impl->ModelJson(name));
  });
  server.Post("/tokenize", guarded([impl](const httplib::Request& req, httplib::Response& res) {
                impl->Tokenize(req, res);
              }));
  server.Post("/detokenize", guarded([impl](const httplib::Request& req, httplib::Response& res) {
                impl->Detokenize(req, res);
              }));
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    WriteJson(res, 200, {{"status", "ok"}});
  });
  if (impl->options.metrics_text) {
    server.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
      res.status = 200;
      res.set_content(impl->options.metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
  server.Get("/ready", [impl](const httplib::Request&, httplib::Response& res) {
    if (!impl->serving || impl->engine.Status().draining) {
      return WriteJson(res, 503, {{"status", "draining"}});
    }
    WriteJson(res, 200, {{"status", "ready"}});
  });

  // Errors no handler wrote a body for: unknown paths, httplib's 413 for a body over the
  // payload limit, malformed HTTP.
  const size_t max_body = impl->options.max_body_bytes;
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError error{res.status, absl::StrCat("HTTP ", res.status), "", ""};
        if (const char* allowed = AllowedMethod(req.path);
            allowed != nullptr && req.method != allowed &&
            !(req.method == "HEAD" && std::string_view(allowed) == "GET") &&
            (res.status == 404 || res.status == 400)) {
          res.status = 405;
          res.set_header("Allow", allowed);
          WriteError(res, ApiError{405,
                                   absl::StrCat(ToAbsl(req.path), " takes ", allowed, ", not ",
                                                ToAbsl(req.method)),
                                   "", "method_not_allowed"});
          return httplib::Server::HandlerResponse::Handled;
        }
        if (res.status == 404) {
          error.message = absl::StrCat("no route for ", ToAbsl(req.method), " ", ToAbsl(req.path));
          error.code = "not_found";
        } else if (res.status == 413) {
          error.message = absl::StrCat("the request body is larger than ", max_body, " bytes");
          error.code = "request_too_large";
        }
        WriteError(res, error);
        return httplib::Server::HandlerResponse::Handled;
      }));
}

}  // namespace moe::server
