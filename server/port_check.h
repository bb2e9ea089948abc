// Whether this process could listen on host:port, asked of the kernel before a server
// binds: gRPC reports a failed bind without its reason, and with SO_REUSEPORT it would
// not fail at all (a second server would share the port and its connections).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace moe::server {

// "HOST:PORT", with an IPv6 address in brackets ("[::1]:50051"): how both servers bind
// and how moe-server announces them.
std::string HostPort(const std::string& host, int port);

// OK when a TCP socket can bind host:port (port 0 always can: the kernel picks one);
// else Unavailable naming `what`, the address and the reason, e.g. "cannot listen for
// gRPC on 127.0.0.1:50051: Address already in use (another process holds the port)".
// `host` is a numeric IPv4 or IPv6 address or "localhost".
absl::Status CheckCanListen(const std::string& what, const std::string& host, int port);

}  // namespace moe::server
