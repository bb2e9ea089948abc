#include "server/http_frontend.h"

#include <httplib.h>

#include <atomic>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "base/status_macros.h"
#include "server/port_check.h"

namespace moe::server {
namespace {

class HttpFrontend : public Frontend {
 public:
  HttpFrontend(ServingEngine& engine, HttpOptions options, std::unique_ptr<httplib::Server> server)
      : service_(engine, std::move(options)), server_(std::move(server)) {
    service_.Register(*server_);
  }
  ~HttpFrontend() override { Shutdown(std::chrono::milliseconds(0)); }

  absl::Status Start(const std::string& host, int port) {
    MOE_RETURN_IF_ERROR(CheckCanListen("HTTP", host, port));
    port_ = port == 0 ? server_->bind_to_any_port(host) : port;
    if (port_ < 0 || (port != 0 && !server_->bind_to_port(host, port))) {
      return absl::UnavailableError(
          absl::StrCat("cannot bind the HTTP port ", port, " on ", ToAbsl(host)));
    }
    thread_ = std::thread([this] {
      server_->listen_after_bind();
      listen_returned_ = true;
    });
    // httplib's stop() does nothing before the listen loop runs, so a Shutdown right
    // after Start would leave the thread listening forever.
    while (!server_->is_running() && !listen_returned_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return absl::OkStatus();
  }

  int port() const override { return port_; }
  void SetServing(bool serving) override { service_.SetServing(serving); }

  void Shutdown(std::chrono::milliseconds grace) override {
    if (!thread_.joinable()) return;
    service_.SetServing(false);
    // Requests in progress get `grace` to finish; the rest are cut (their engine
    // requests cancelled by the service).
    const auto end = std::chrono::steady_clock::now() + grace;
    while (service_.in_flight() > 0 && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    server_->stop();
    thread_.join();
  }

 private:
  HttpService service_;
  std::unique_ptr<httplib::Server> server_;  // an SSLServer with TLS
  int port_ = -1;
  std::atomic<bool> listen_returned_{false};
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Frontend>> StartHttpFrontend(const FrontendOptions& options,
                                                            HttpOptions http_options) {
  if (options.engine == nullptr) return absl::InvalidArgumentError("StartHttpFrontend: no engine");
  std::unique_ptr<httplib::Server> server;
  if (!http_options.tls_cert_file.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(http_options.tls_cert_file.c_str(),
                                                    http_options.tls_key_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP TLS: cannot use the certificate ", ToAbsl(http_options.tls_cert_file),
                       " with the key ", ToAbsl(http_options.tls_key_file),
                       " (unreadable, not PEM, or they do not match)"));
    }
    server = std::move(tls);
  } else {
    server = std::make_unique<httplib::Server>();
  }
  auto frontend =
      std::make_unique<HttpFrontend>(*options.engine, std::move(http_options), std::move(server));
  absl::Status started = frontend->Start(options.host, options.port);
  if (!started.ok()) return started;
  return frontend;
}

}  // namespace moe::server
