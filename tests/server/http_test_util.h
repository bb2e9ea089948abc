// An httplib::Server with an HttpService on 127.0.0.1 and a free port, run on its own
// thread, and a reader for SSE bodies: shared by the HTTP service tests.
#pragma once

#include <httplib.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "server/http_service.h"

namespace moe::server::testing {

class TestHttpServer {
 public:
  explicit TestHttpServer(HttpService& service) {
    service.Register(server_);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 500 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  ~TestHttpServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  httplib::Client Client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(120, 0);
    return client;
  }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
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
