// The one place where absl::Status codes become wire codes (STYLE.md item 11).
#pragma once

#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"

namespace moe::server {

// HTTP status for an absl status: InvalidArgument/OutOfRange/FailedPrecondition 400,
// NotFound 404, AlreadyExists 409, ResourceExhausted 429, Unavailable 503,
// DeadlineExceeded 504, Unimplemented 501, Unauthenticated 401, PermissionDenied 403,
// Cancelled 499, everything else 500.
int HttpStatusCode(const absl::Status& status);

// OpenAI error "type" for an HTTP status: invalid_request_error (4xx),
// rate_limit_error... (see the .cc).
std::string_view OpenAiErrorType(int http_status);

// The same code and message as a grpc::Status.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace moe::server
