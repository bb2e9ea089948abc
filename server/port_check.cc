#include "server/port_check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::server {

std::string HostPort(const std::string& host, int port) {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

absl::Status CheckCanListen(const std::string& what, const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos;
  const std::string address = HostPort(host, port);
  auto fail = [&](const std::string& reason) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for ", what, " on ", address, ": ", reason));
  };
  sockaddr_storage storage = {};
  socklen_t length = 0;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) {
      return fail("not a numeric IPv6 address");
    }
    length = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    const std::string numeric = host == "localhost" ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, numeric.c_str(), &a->sin_addr) != 1) {
      return fail("not a numeric IPv4 address");
    }
    length = sizeof(*a);
  }
  const int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(std::strerror(errno));
  // What the servers themselves set: SO_REUSEADDR (a quick restart over TIME_WAIT
  // sockets works), never SO_REUSEPORT.
  int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&storage), length);
  const int error = errno;
  close(fd);
  if (bound == 0) return absl::OkStatus();
  if (error == EADDRINUSE) {
    return fail(absl::StrCat(std::strerror(error), " (another process holds the port)"));
  }
  if (error == EACCES) {
    return fail(absl::StrCat(std::strerror(error), " (ports below 1024 need privileges)"));
  }
  if (error == EADDRNOTAVAIL) {
    return fail(absl::StrCat(std::strerror(error), " (no interface has this address)"));
  }
  return fail(std::strerror(error));
}

}  // namespace moe::server
