// The OpenAI-compatible HTTP service (DESIGN.md section 7): an HttpHandler
// (server/http_types.h) that parses and validates requests, tokenizes them, and exchanges
// only plain structs with the ServingEngine (STYLE.md item 4). It knows no sockets: the
// transport is server/http_server.h (Boost.Beast), which server/http_frontend.h runs.
//
//   POST /v1/completions, POST /v1/chat/completions  (SSE with "stream": true)
//   GET  /v1/models, GET /v1/models/{name}
//   POST /tokenize, POST /detokenize
//   GET  /health (live), GET /ready (200 unless draining, else 503)
//   GET  /metrics (Prometheus text, when HttpOptions::metrics_text is set)
//
// Errors are OpenAI bodies {"error": {"message", "type", "param", "code"}}: 400 bad input,
// 401 missing or wrong API key, 404 unknown model or path, 405 wrong method, 413 body too
// large, 429 queue full, 503 draining or cut at the end of the drain, 504 timed out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/http_types.h"

namespace moe {
class ServingEngine;
}

namespace moe::server {

class ApiKeys;

struct HttpOptions {
  // The names requests may give as "model", which /v1/models lists; the first is the
  // one responses carry. "default" is accepted as well. Empty: the model directory's
  // base name.
  std::vector<std::string> served_model_names;
  // (The context, the max_tokens cap and default, and the vocabulary come from the
  // engine's ServingLimits; the body size limit is the transport's.)
  // A non-streaming request is aborted (504) after this long; 0: never. A client that
  // disconnects has its request aborted at once whatever this says.
  std::chrono::seconds request_timeout{600};
  // An SSE stream with no event for this long gets a ": keep-alive" comment, which keeps
  // proxies from closing it while its request waits in the queue.
  std::chrono::milliseconds keepalive_interval{2000};
  // GET /metrics returns this text (the Prometheus exposition format) when set.
  std::function<std::string()> metrics_text;
  // Every route but /health, /ready and /metrics needs "Authorization: Bearer KEY" with
  // one of these (401 otherwise). Null or empty: none.
  std::shared_ptr<const ApiKeys> api_keys;
};

class HttpService : public HttpHandler {
 public:
  // `engine` must outlive this service, and the service the transport running it.
  HttpService(ServingEngine& engine, HttpOptions options);
  ~HttpService() override;
  HttpService(const HttpService&) = delete;
  HttpService& operator=(const HttpService&) = delete;

  // HttpHandler. A generation request answers with a PendingResponse (non-streamed) or a
  // ResponseStream (SSE) over its engine request, whose on_event is `wake`.
  HttpReply Handle(const HttpRequest& request, std::function<void()> wake) override;
  // GET and HEAD requests (none tokenizes or waits on the engine), and bodies up to
  // 16 KiB: the rest are parsed and tokenized on the transport's workers.
  bool Inline(const HttpRequest& request) const override;
  HttpResponse TransportError(int status, std::string message) const override;

  // The name responses carry: the first of served_model_names.
  const std::string& served_model_name() const;
  // While false (draining), /ready is 503 and new generation requests get 503; requests
  // in progress go on. True at construction.
  void SetServing(bool serving);
  // Generation requests accepted by the engine whose response has not ended.
  int in_flight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::server
