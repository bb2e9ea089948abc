// The gRPC front end (DESIGN.md sections 2 and 7): the moe.v1.Serving service over one
// ServingEngine, gRPC's standard grpc.health.v1 service and server reflection, on one port.
// It uses gRPC's callback API: a Generate stream is a reactor woken by the engine's
// on_event callback, so thousands of streams need no thread each. Requests are
// validated and tokenized here, on gRPC's threads, before ServingEngine::Submit.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/serving_engine.h"

namespace moe::v1 {
class GenerateRequest;
}  // namespace moe::v1

namespace moe::server {

class ApiKeys;

// The service name health checks may ask about besides "" (the whole server).
inline constexpr char kServingServiceName[] = "moe.v1.Serving";

struct GrpcServerOptions {
  std::string host = "127.0.0.1";            // address to bind (an IPv6 address without brackets)
  int port = 0;                              // 0: a free port the kernel picks
  int max_receive_message_bytes = 16 << 20;  // requests larger than this: RESOURCE_EXHAUSTED
  // moe.v1.Serving calls need "authorization: Bearer KEY" metadata with one of these
  // (UNAUTHENTICATED otherwise); health and reflection stay open. Null or empty: none.
  std::shared_ptr<const ApiKeys> api_keys;
  // PEM contents (not paths): serve TLS instead of plaintext. Both or neither.
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

class GrpcServer {
 public:
  // Binds, starts serving and reports SERVING on health. `engine` is not owned and must
  // outlive the GrpcServer.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServingEngine* engine,
                                                           const GrpcServerOptions& options);
  ~GrpcServer();  // Shutdown with no grace if not done yet

  // The port actually bound (the kernel's pick when options.port was 0).
  int port() const;
  // The health status of "" and kServingServiceName: SERVING or NOT_SERVING.
  void SetServing(bool serving);
  // Stops accepting calls, waits up to `grace` for calls in progress, then cancels the
  // rest and returns once every call is done. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  struct Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a moe.v1.GenerateRequest into the engine's request: checks every field (the
// message names it), tokenizes a text prompt and applies the defaults the proto
// documents. InvalidArgument for bad input, Unimplemented for self_contrast.
// `deadline` becomes the engine request's deadline.
absl::StatusOr<GenerateRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                                const ServingEngine& engine,
                                                std::optional<SteadyTime> deadline);

}  // namespace moe::server
