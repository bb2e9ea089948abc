// The HTTP front end behind moe-server's hook (server/frontend.h): an HttpService on an
// HttpServer (Boost.Beast, server/http_server.h) bound to options.host:options.port.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "server/frontend.h"
#include "server/http_server.h"
#include "server/http_service.h"

namespace moe::server {

// `transport` gives the threads, deadlines, body limit and TLS; its host and port are
// options'. InvalidArgument without an engine or with bad TLS material; Unavailable when
// the address cannot be bound.
absl::StatusOr<std::unique_ptr<Frontend>> StartHttpFrontend(const FrontendOptions& options,
                                                            HttpOptions http_options,
                                                            HttpServerOptions transport = {});

}  // namespace moe::server
