#include "server/http_service.h"

#include <atomic>
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

// How long past its deadline a non-streamed request may go before it is cut here (the
// engine aborts it at the deadline; this covers a stalled engine).
constexpr std::chrono::seconds kDeadlineMargin{5};

// Bodies up to this size are handled on the connection's thread (HttpService::Inline).
constexpr size_t kInlineBodyBytes = 16 << 10;

// Never throws: text deltas are valid UTF-8 by contract, but a bad byte must not turn
// into an exception (and a 500) mid-stream.
std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse JsonResponse(int status, const json& body) {
  HttpResponse response;
  response.status = status;
  response.body = Dump(body);
  return response;
}

HttpResponse ErrorResponse(const ApiError& error) {
  return JsonResponse(error.status, ErrorBody(error));
}

// What a request still live at the end of the drain grace gets.
ApiError CutError() {
  return ApiError{503,
                  "the server shut down before this request finished (the drain grace "
                  "ended)",
                  "", "server_shutdown"};
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

std::string SseData(const json& value) { return absl::StrCat("data: ", Dump(value), "\n\n"); }

// Counts a generation request from its acceptance by the engine until its reply is gone.
class InFlight {
 public:
  explicit InFlight(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
  ~InFlight() { count_->fetch_sub(1); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>* count_;
};

// A non-streamed generation: gathers the text until the finish event.
class CollectedResponse : public PendingResponse {
 public:
  CollectedResponse(std::shared_ptr<RequestStream> stream, ResponseHeader header,
                    std::optional<Clock::time_point> deadline, std::chrono::seconds timeout,
                    std::atomic<int>* in_flight)
      : stream_(std::move(stream)),
        header_(std::move(header)),
        deadline_(deadline),
        timeout_(timeout),
        in_flight_(in_flight) {}
  ~CollectedResponse() override {
    if (!ended_) stream_->Cancel();
  }

  std::optional<HttpResponse> Poll() override {
    while (std::optional<StreamEvent> event = stream_->TryNext()) {
      switch (event->kind) {
        case StreamEvent::Kind::kTokens:
          text_ += event->text;
          break;
        case StreamEvent::Kind::kError:
          ended_ = true;
          return ErrorResponse(ApiErrorFromStatus(event->error));
        case StreamEvent::Kind::kFinish:
          ended_ = true;
          if (event->reason != StopReason::kAbort) {
            return JsonResponse(200,
                                header_.Full(text_, FinishReasonName(event->reason), event->usage));
          }
          if (deadline_ && Clock::now() >= *deadline_) return TimedOut();
          return ErrorResponse(
              ApiError{503, "the request was aborted by the server", "", "aborted"});
      }
    }
    if (deadline_ && Clock::now() >= *deadline_ + kDeadlineMargin) {
      stream_->Cancel();
      ended_ = true;
      return TimedOut();
    }
    return std::nullopt;
  }

  void Cancel() override {
    stream_->Cancel();
    ended_ = true;
  }

  HttpResponse Cut() override {
    if (std::optional<HttpResponse> done = Poll()) return *std::move(done);
    Cancel();
    return ErrorResponse(CutError());
  }

 private:
  HttpResponse TimedOut() const {
    return ErrorResponse(ApiError{
        504, absl::StrCat("the request timed out after ", timeout_.count(), " s"), "", "timeout"});
  }

  std::shared_ptr<RequestStream> stream_;
  ResponseHeader header_;
  std::optional<Clock::time_point> deadline_;
  std::chrono::seconds timeout_;
  InFlight in_flight_;
  std::string text_;
  bool ended_ = false;
};

// A streamed generation: one SSE event per text delta, the finish chunk (and the usage
// chunk with stream_options.include_usage), then "data: [DONE]".
class SseStream : public ResponseStream {
 public:
  SseStream(std::shared_ptr<RequestStream> stream, ResponseHeader header,
            std::chrono::milliseconds keepalive, std::atomic<int>* in_flight)
      : stream_(std::move(stream)),
        header_(std::move(header)),
        keepalive_(keepalive),
        in_flight_(in_flight) {}
  ~SseStream() override {
    if (!finished_) stream_->Cancel();
  }

  bool Poll(std::string* out) override {
    const size_t before = out->size();
    if (header_.chat && !sent_role_) {
      *out += SseData(header_.Chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
      sent_role_ = true;
    }
    while (!finished_) {
      std::optional<StreamEvent> event = stream_->TryNext();
      if (!event) break;
      Append(*event, out);
    }
    const Clock::time_point now = Clock::now();
    if (out->size() > before) {
      last_write_ = now;
    } else if (now - last_write_ >= keepalive_) {
      *out += ": keep-alive\n\n";  // an SSE comment; clients ignore it
      last_write_ = now;
    }
    return finished_;
  }

  void Cancel() override {
    stream_->Cancel();
    finished_ = true;
  }

  void Cut(std::string* out) override {
    if (Poll(out)) return;
    Cancel();
    *out += SseData(ErrorBody(CutError()));
    *out += "data: [DONE]\n\n";
  }

 private:
  void Append(const StreamEvent& event, std::string* out) {
    switch (event.kind) {
      case StreamEvent::Kind::kTokens:
        if (event.text.empty()) return;
        *out += SseData(header_.chat ? header_.Chunk({{"content", event.text}}, nullptr)
                                     : header_.Chunk(event.text, nullptr));
        return;
      case StreamEvent::Kind::kFinish:
        *out += SseData(header_.Chunk(header_.chat ? json::object() : json(""),
                                      FinishReasonName(event.reason)));
        if (header_.include_usage) *out += SseData(header_.UsageChunk(event.usage));
        break;
      case StreamEvent::Kind::kError:
        *out += SseData(ErrorBody(ApiErrorFromStatus(event.error)));
        break;
    }
    *out += "data: [DONE]\n\n";
    finished_ = true;
  }

  std::shared_ptr<RequestStream> stream_;
  ResponseHeader header_;
  std::chrono::milliseconds keepalive_;
  InFlight in_flight_;
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

  using Handler = HttpReply (Impl::*)(const HttpRequest&, std::function<void()>&);
  struct Route {
    const char* method;
    const char* path;
    bool prefix;  // `path` then at least one more byte
    bool open;    // no API key needed
    Handler handler;
  };
  // Every route, once: routing, 405's Allow and the API-key exemptions read this table.
  // Every route, once: routing, 405's Allow and the API-key exemptions read this table.
  static const Route kRoutes[9];

  Impl(ServingEngine& e, HttpOptions o)
      : engine(e), options(std::move(o)), chat_template(ChatTemplate::FromModelDir(e.model_dir())) {
    if (options.served_model_names.empty()) {
      options.served_model_names.push_back(BaseName(e.model_dir()));
    }
    limits.served_names = options.served_model_names;
    const ServingLimits& engine_limits = e.limits();
    limits.context = engine_limits.context_length;
    limits.vocab_size = engine_limits.vocab_size;
    limits.num_routed_experts = engine_limits.num_routed_experts;
    limits.max_tokens_limit = engine_limits.max_tokens;
    max_prompt_tokens = engine_limits.max_prompt_tokens;
    limits.default_max_tokens = engine_limits.default_max_tokens;
    limits.default_sampling = engine_limits.default_sampling;
  }

  static bool Matches(const Route& route, std::string_view path) {
    const std::string_view want = route.path;
    return route.prefix ? path.size() > want.size() && path.substr(0, want.size()) == want
                        : path == want;
  }

  HttpReply Dispatch(const HttpRequest& request, std::function<void()>& wake) {
    const Route* route = nullptr;
    for (const Route& r : kRoutes) {
      if (Matches(r, request.path)) route = &r;
    }
    if (route == nullptr || (route->handler == &Impl::Metrics && !options.metrics_text)) {
      if (auto denied = CheckKey(request, /*open=*/false)) return HttpReply::Whole(*denied);
      return Error(ApiError{
          404, absl::StrCat("no route for ", ToAbsl(request.method), " ", ToAbsl(request.path)), "",
          "not_found"});
    }
    if (auto denied = CheckKey(request, route->open)) return HttpReply::Whole(*denied);
    const bool head_of_get = request.method == "HEAD" && std::string_view(route->method) == "GET";
    if (request.method != route->method && !head_of_get) {
      HttpReply reply = Error(ApiError{405,
                                       absl::StrCat(ToAbsl(request.path), " takes ", route->method,
                                                    ", not ", ToAbsl(request.method)),
                                       "", "method_not_allowed"});
      reply.response.headers.emplace_back("Allow", route->method);
      return reply;
    }
    return (this->*(route->handler))(request, wake);
  }

  // A 401 unless the route is open, no keys are set, or the request has a good one.
  std::optional<HttpResponse> CheckKey(const HttpRequest& request, bool open) const {
    if (open || options.api_keys == nullptr || !options.api_keys->enabled()) return std::nullopt;
    const std::optional<std::string_view> sent = request.Header("Authorization");
    if (sent && options.api_keys->Allows(*sent)) return std::nullopt;
    HttpResponse response =
        ErrorResponse(ApiError{401,
                               sent ? "the API key is not valid"
                                    : "this server needs an API key: send 'Authorization: "
                                      "Bearer KEY'",
                               "", "invalid_api_key"});
    response.headers.emplace_back("WWW-Authenticate", "Bearer");
    return response;
  }

  static HttpReply Error(const ApiError& error) { return HttpReply::Whole(ErrorResponse(error)); }
  static HttpReply Json(int status, const json& body) {
    return HttpReply::Whole(JsonResponse(status, body));
  }

  // The body parsed as a JSON object, or the error.
  static std::optional<ApiError> ReadBody(const HttpRequest& request, json* body) {
    return ParseJsonObject(request.body, body);
  }

  HttpReply Completions(const HttpRequest& request, std::function<void()>& wake) {
    return Generate(request, wake, /*chat=*/false);
  }
  HttpReply ChatCompletions(const HttpRequest& request, std::function<void()>& wake) {
    return Generate(request, wake, /*chat=*/true);
  }

  HttpReply Generate(const HttpRequest& request, std::function<void()>& wake, bool chat) {
    if (!serving) {
      return Error(ApiError{503, "the server is shutting down and accepts no new requests", "",
                            "server_unavailable"});
    }
    json body;
    if (auto e = ReadBody(request, &body)) return Error(*e);
    ParsedGeneration parsed;
    std::optional<ApiError> error =
        chat ? ParseChatRequest(body, limits, engine.tokenizer(), chat_template, &parsed)
             : ParseCompletionRequest(body, limits, engine.tokenizer(), &parsed);
    if (error) return Error(*error);

    ResponseHeader header{chat, NewId(chat ? "chatcmpl-" : "cmpl-"), std::time(nullptr),
                          options.served_model_names.front(), parsed.include_usage};
    parsed.request.id = header.id;
    std::optional<Clock::time_point> deadline;
    if (!parsed.stream && options.request_timeout.count() > 0) {
      deadline = Clock::now() + options.request_timeout;
      parsed.request.deadline = deadline;
    }
    absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        engine.Submit(std::move(parsed.request), std::move(wake));
    if (!stream.ok()) return Error(ApiErrorFromStatus(stream.status()));

    HttpReply reply;
    if (parsed.stream) {
      reply.response.content_type = "text/event-stream";
      reply.response.headers.emplace_back("Cache-Control", "no-cache");
      reply.stream = std::make_unique<SseStream>(*std::move(stream), std::move(header),
                                                 options.keepalive_interval, &in_flight);
    } else {
      reply.pending = std::make_unique<CollectedResponse>(
          *std::move(stream), std::move(header), deadline, options.request_timeout, &in_flight);
    }
    return reply;
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

  HttpReply Models(const HttpRequest&, std::function<void()>&) {
    json data = json::array();
    for (const std::string& name : options.served_model_names) data.push_back(ModelJson(name));
    return Json(200, {{"object", "list"}, {"data", std::move(data)}});
  }

  HttpReply Model(const HttpRequest& request, std::function<void()>&) {
    const std::string name = request.path.substr(std::string_view("/v1/models/").size());
    if (!IsServedModelName(limits, name)) {
      return Error(ApiError{404, absl::StrCat("The model '", ToAbsl(name), "' does not exist"),
                            "model", "model_not_found"});
    }
    return Json(200, ModelJson(name));
  }

  HttpReply Tokenize(const HttpRequest& request, std::function<void()>&) {
    json body;
    if (auto e = ReadBody(request, &body)) return Error(*e);
    std::string text;
    bool add_special_tokens = true;
    if (auto e = ParseTokenizeRequest(body, limits, &text, &add_special_tokens)) return Error(*e);
    absl::StatusOr<std::vector<int32_t>> ids = engine.tokenizer().Encode(text, add_special_tokens);
    if (!ids.ok()) return Error(ApiError{400, std::string(ids.status().message()), "prompt", ""});
    return Json(200, {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", limits.context}});
  }

  HttpReply Detokenize(const HttpRequest& request, std::function<void()>&) {
    json body;
    if (auto e = ReadBody(request, &body)) return Error(*e);
    std::vector<int32_t> ids;
    bool skip_special_tokens = false;
    if (auto e = ParseDetokenizeRequest(body, limits, &ids, &skip_special_tokens)) {
      return Error(*e);
    }
    return Json(200, {{"prompt", engine.tokenizer().Decode(ids, skip_special_tokens)}});
  }

  HttpReply Health(const HttpRequest&, std::function<void()>&) {
    return Json(200, {{"status", "ok"}});
  }

  HttpReply Ready(const HttpRequest&, std::function<void()>&) {
    if (!serving || engine.Status().draining) return Json(503, {{"status", "draining"}});
    return Json(200, {{"status", "ready"}});
  }

  HttpReply Metrics(const HttpRequest&, std::function<void()>&) {
    HttpResponse response;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = options.metrics_text();
    return HttpReply::Whole(std::move(response));
  }
};

const HttpService::Impl::Route HttpService::Impl::kRoutes[9] = {
    {"POST", "/v1/completions", false, false, &Impl::Completions},
    {"POST", "/v1/chat/completions", false, false, &Impl::ChatCompletions},
    {"POST", "/tokenize", false, false, &Impl::Tokenize},
    {"POST", "/detokenize", false, false, &Impl::Detokenize},
    {"GET", "/v1/models", false, false, &Impl::Models},
    {"GET", "/v1/models/", true, false, &Impl::Model},
    {"GET", "/health", false, true, &Impl::Health},
    {"GET", "/ready", false, true, &Impl::Ready},
    {"GET", "/metrics", false, true, &Impl::Metrics},
};

HttpService::HttpService(ServingEngine& engine, HttpOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(options))) {}

HttpService::~HttpService() = default;

const std::string& HttpService::served_model_name() const {
  return impl_->options.served_model_names.front();
}

void HttpService::SetServing(bool serving) { impl_->serving = serving; }

int HttpService::in_flight() const { return impl_->in_flight.load(); }

HttpReply HttpService::Handle(const HttpRequest& request, std::function<void()> wake) {
  // Bad input is a 400 even when a JSON accessor we missed throws; anything else is a
  // 500 with an OpenAI body, and the server goes on.
  try {
    return impl_->Dispatch(request, wake);
  } catch (const json::exception& e) {
    return Impl::Error(ApiError{400, absl::StrCat("invalid request: ", e.what()), "", ""});
  } catch (const std::exception& e) {
    return Impl::Error(ApiError{500, absl::StrCat("internal error: ", e.what()), "", ""});
  }
}

bool HttpService::Inline(const HttpRequest& request) const {
  // A small body parses and tokenizes in tens of microseconds: cheaper than two thread
  // hops on a machine whose cores the engine keeps busy. Large ones go to the workers.
  return request.method == "GET" || request.method == "HEAD" ||
         request.body.size() <= kInlineBodyBytes;
}

HttpResponse HttpService::TransportError(int status, std::string message) const {
  std::string code;
  switch (status) {
    case 400:
      code = "bad_request";
      break;
    case 413:
      code = "request_too_large";
      break;
    case 431:
      code = "request_header_too_large";
      break;
  }
  return ErrorResponse(ApiError{status, std::move(message), "", std::move(code)});
}

}  // namespace moe::server
