#include "server/http_frontend.h"

#include <memory>
#include <utility>

#include "base/status_macros.h"
#include "server/port_check.h"

namespace moe::server {
namespace {

class HttpFrontend : public Frontend {
 public:
  HttpFrontend(ServingEngine& engine, HttpOptions options) : service_(engine, std::move(options)) {}
  ~HttpFrontend() override { Shutdown(std::chrono::milliseconds(0)); }

  absl::Status Start(HttpServerOptions transport) {
    MOE_RETURN_IF_ERROR(CheckCanListen("HTTP", transport.host, transport.port));
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start(std::move(transport), service_);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    return absl::OkStatus();
  }

  int port() const override { return server_->port(); }
  void SetServing(bool serving) override { service_.SetServing(serving); }

  // Requests in progress get `grace` to finish; the rest are cut, each with a clear
  // error (their engine requests cancelled).
  void Shutdown(std::chrono::milliseconds grace) override {
    if (server_ == nullptr) return;
    service_.SetServing(false);
    server_->Shutdown(grace);
    server_.reset();
  }

 private:
  HttpService service_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Frontend>> StartHttpFrontend(const FrontendOptions& options,
                                                            HttpOptions http_options,
                                                            HttpServerOptions transport) {
  if (options.engine == nullptr) return absl::InvalidArgumentError("StartHttpFrontend: no engine");
  auto frontend = std::make_unique<HttpFrontend>(*options.engine, std::move(http_options));
  transport.host = options.host;
  transport.port = options.port;
  MOE_RETURN_IF_ERROR(frontend->Start(std::move(transport)));
  return frontend;
}

}  // namespace moe::server
