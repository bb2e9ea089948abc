// The plain types between the HTTP transport (server/http_server.h, Boost.Beast) and the
// services behind it (server/http_service.h): no Beast or Asio type crosses this line, so
// a service is tested and reasoned about without sockets.
//
// A handler answers a request with an HttpReply: a whole response now, or one that waits
// on other threads (the engine), which the transport polls on the connection's own thread
// whenever the `wake` callback it handed the handler is called, and on a timer besides.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::server {

// ASCII case-insensitive equality (HTTP field names).
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query, percent-decoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first value of the field `name` (case-insensitive), or nullopt.
  std::optional<std::string_view> Header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (EqualsIgnoreCase(key, name)) return value;
    }
    return std::nullopt;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type
  std::string body;
};

// A whole response that is ready later (a non-streamed generation). Called only on the
// connection's thread.
class PendingResponse {
 public:
  virtual ~PendingResponse() = default;  // cancels the work if it has not ended
  // The response once it is ready; nullopt while it is not.
  virtual std::optional<HttpResponse> Poll() = 0;
  // The client went away: abort the work.
  virtual void Cancel() = 0;
  // The drain grace ended: abort the work and say so (a 503 body).
  virtual HttpResponse Cut() = 0;
};

// A body that is written as it comes (an SSE stream), after its head. Called only on the
// connection's thread.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;  // cancels the work if it has not ended
  // Appends what is ready to `out` (an idle stream may append a keep-alive comment);
  // true once the body is complete.
  virtual bool Poll(std::string* out) = 0;
  // The client went away (or stopped reading): abort the work.
  virtual void Cancel() = 0;
  // The drain grace ended: abort the work and append the body's last words (an error
  // event, then the end marker).
  virtual void Cut(std::string* out) = 0;
};

struct HttpReply {
  // The whole response; with `stream`, its status and headers, sent before the body.
  HttpResponse response;
  std::unique_ptr<PendingResponse> pending;
  std::unique_ptr<ResponseStream> stream;

  static HttpReply Whole(HttpResponse r) {
    HttpReply reply;
    reply.response = std::move(r);
    return reply;
  }
};

// What the transport serves. Handle may run on any of the transport's worker threads;
// the objects it returns are then used on the connection's thread.
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // `wake` is thread-safe and may be called any time, even after the reply is gone: it
  // asks the transport to poll this request's reply soon.
  virtual HttpReply Handle(const HttpRequest& request, std::function<void()> wake) = 0;
  // True for requests cheap enough to answer on the connection's thread (probes,
  // metrics); the rest go to the transport's worker threads.
  virtual bool Inline(const HttpRequest& request) const = 0;
  // The response for an error the transport found itself (malformed HTTP 400, body too
  // large 413, header too large 431, ...).
  virtual HttpResponse TransportError(int status, std::string message) const = 0;
};

}  // namespace moe::server
