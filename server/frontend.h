// A front end that moe-server runs beside gRPC on its own port (the HTTP/OpenAI service,
// server/http_frontend.h), kept until shutdown.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "scheduler/serving_engine.h"

namespace moe::server {

struct FrontendOptions {
  ServingEngine* engine = nullptr;  // not owned; outlives the front end
  std::string host;                 // address to bind
  int port = 0;                     // 0: a free port the kernel picks
};

class Frontend {
 public:
  virtual ~Frontend() = default;
  // The port actually bound.
  virtual int port() const = 0;
  // false while draining: readiness reports not ready, new requests are refused.
  virtual void SetServing(bool serving) = 0;
  // Stops accepting, waits up to `grace` for requests in progress, then closes.
  virtual void Shutdown(std::chrono::milliseconds grace) = 0;
};

}  // namespace moe::server
