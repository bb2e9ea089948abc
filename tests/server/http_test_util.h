// An HttpServer (the Beast transport) with an HttpService on 127.0.0.1 and a free port,
// and a reader for SSE bodies: shared by the HTTP service tests, whose client is
// cpp-httplib's.
#pragma once

#include <httplib.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "server/http_server.h"
#include "server/http_service.h"

namespace moe::server::testing {

class TestHttpServer {
 public:
  explicit TestHttpServer(HttpService& service, HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(options, service);
    if (!server.ok()) {
      ADD_FAILURE() << server.status();
      return;
    }
    server_ = *std::move(server);
  }
  int port() const { return server_ ? server_->port() : -1; }
  HttpServer& server() { return *server_; }
  httplib::Client Client() const {
    httplib::Client client("127.0.0.1", port());
    client.set_read_timeout(120, 0);
    return client;
  }

 private:
  std::unique_ptr<HttpServer> server_;
};

// The payloads of the "data: ..." events of an SSE body, in order (comments skipped).
inline std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated SSE event: " << body.substr(pos);
      break;
    }
    std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.rfind(":", 0) == 0) continue;
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    out.push_back(event.substr(6));
  }
  return out;
}

}  // namespace moe::server::testing
