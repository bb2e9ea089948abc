// The OpenAI-compatible HTTP front end (DESIGN.md section 7) on cpp-httplib: parses and
// validates on httplib's worker threads, tokenizes there, and exchanges only plain
// structs with the ServingEngine (STYLE.md item 4).
//
//   POST /v1/completions, POST /v1/chat/completions  (SSE with "stream": true)
//   GET  /v1/models, GET /v1/models/{name}
//   POST /tokenize, POST /detokenize
//   GET  /health (live), GET /ready (200 unless draining, else 503)
//   GET  /metrics (Prometheus text, when HttpOptions::metrics_text is set)
//
// Errors are OpenAI bodies {"error": {"message", "type", "param", "code"}}: 400 bad input,
// 404 unknown model or path, 413 body too large, 429 queue full, 503 draining.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace httplib {
class Server;
}

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
  // Larger bodies get 413 (Content-Length is checked before the body is read).
  size_t max_body_bytes = 1 << 20;
  // (The context, the max_tokens cap and default, and the vocabulary come from the
  // engine's ServingLimits.)
  // A non-streaming request is aborted (504) after this long: httplib 0.11 cannot tell
  // the handler that its client went away, so this bounds the work of an abandoned one.
  std::chrono::seconds request_timeout{600};
  // An SSE stream with no event for this long gets a ": keep-alive" comment, which also
  // detects a client that disconnected while its request waits in the queue.
  std::chrono::milliseconds keepalive_interval{2000};
  // GET /metrics returns this text (the Prometheus exposition format) when set.
  std::function<std::string()> metrics_text;
  // Every route but /health, /ready and /metrics needs "Authorization: Bearer KEY" with
  // one of these (401 otherwise). Null or empty: none.
  std::shared_ptr<const ApiKeys> api_keys;
  // PEM files: serve HTTPS instead of HTTP (StartHttpFrontend). Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // httplib worker threads: one per connection being served (an SSE stream holds its
  // thread until it ends; further connections wait). httplib's own default is 8.
  int num_threads = 64;
};

class HttpService {
 public:
  // `engine` must outlive this service, and the service the httplib::Server using it.
  HttpService(ServingEngine& engine, HttpOptions options);
  ~HttpService();
  HttpService(const HttpService&) = delete;
  HttpService& operator=(const HttpService&) = delete;

  // Adds the routes above to `server` and configures it (call before binding): payload
  // limit max_body_bytes, an error handler (OpenAI error bodies for 404/413/... that no
  // route produced), num_threads workers, sockets without SO_REUSEPORT. Also ignores
  // SIGPIPE process-wide: httplib 0.11 writes with send(..., 0), so a client that
  // disconnects mid-stream would otherwise kill the process.
  void Register(httplib::Server& server);

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
