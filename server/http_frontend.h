// The HTTP service behind moe-server's front-end hook (server/frontend.h): an
// httplib::Server with an HttpService, bound to options.host:options.port and served on
// its own thread. moe-server's StartHttp can return StartHttpFrontend(options, {...}).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "server/frontend.h"
#include "server/http_service.h"

namespace moe::server {

// InvalidArgument without an engine; Unavailable when the address cannot be bound.
absl::StatusOr<std::unique_ptr<Frontend>> StartHttpFrontend(const FrontendOptions& options,
                                                            HttpOptions http_options);

}  // namespace moe::server
