// An event-driven HTTP/1.1 server on Boost.Beast and Asio with C++20 coroutines: one
// coroutine per connection on a fixed set of I/O threads (one io_context each), and a
// fixed pool of worker threads for handlers that are not Inline. The thread count does
// not depend on the number of connections, an idle or slow connection costs a coroutine
// frame and a socket, and every read and write has a deadline:
//
//   idle_timeout     a keep-alive connection with no byte of a next request is closed
//   header_timeout   the whole request head, from its first byte (slow-header clients)
//   body_timeout     the whole body, after the head
//   write_timeout    any one write (a client that stops reading its stream)
//
// Keep-alive and pipelining follow HTTP/1.1 (requests on one connection are answered in
// order). While a reply waits (PendingResponse, ResponseStream), the connection is
// watched: a client that closes it has its reply cancelled at once. Shutdown stops
// accepting, lets replies finish within a grace, then cuts the rest (their Cut text is
// sent) and closes every connection.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/http_types.h"

namespace moe::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port the kernel picks
  int io_threads = 2;
  int worker_threads = 2;
  int backlog = 4096;                  // the kernel caps it at net.core.somaxconn
  size_t max_header_bytes = 64 << 10;  // larger heads get 431
  size_t max_body_bytes = 1 << 20;     // larger bodies get 413 (before they are read)
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  // A waiting reply is polled at least this often (its own timeouts, keep-alives).
  std::chrono::milliseconds poll_interval{500};
  // PEM text: serve HTTPS. Both or neither.
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

class HttpServer {
 public:
  // Binds and starts serving. `handler` must outlive the server. InvalidArgument: bad
  // TLS material; Unavailable: the address cannot be bound (the message says why).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           HttpHandler& handler);
  ~HttpServer();  // Shutdown(0) if not done
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // Replies not yet ended (pending or streaming).
  int active_replies() const;
  // Open connections.
  int connections() const;
  // Stops accepting and closes idle connections (responses say "Connection: close"
  // from now on); waits up to `grace` for active replies, cuts the rest, gives the cut
  // words up to a second to be written, closes everything and joins the threads.
  void Shutdown(std::chrono::milliseconds grace);

  struct Core;  // the implementation's (http_server.cc)

 private:
  explicit HttpServer(std::unique_ptr<Core> core);
  std::unique_ptr<Core> core_;
};

}  // namespace moe::server
