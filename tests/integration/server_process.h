// Runs the real moe-server binary for end-to-end tests: started on 127.0.0.1 with
// ephemeral gRPC and HTTP ports (read from its "grpc/http listening on" lines), stopped
// with SIGTERM.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace moe::testing {

class ServerProcess {
 public:
  // Starts `binary` --host 127.0.0.1 --grpc-port 0 --http-port 0 `extra_args`... and waits
  // up to `timeout` for its two port lines. nullptr (with the reason on stderr) if it exits or does
  // not print the line in time.
  static std::unique_ptr<ServerProcess> Start(
      const std::string& binary, const std::vector<std::string>& extra_args = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ~ServerProcess();  // Stop(10 s), then SIGKILL if it is still running

  int grpc_port() const { return grpc_port_; }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int http_port() const { return http_port_; }
  pid_t pid() const { return pid_; }

  // Sends SIGTERM (once) and waits up to `timeout` for the process to exit. Its exit
  // code, 128 + signal number if a signal killed it, or -1 if it is still running.
  int Stop(std::chrono::milliseconds timeout);

 private:
  ServerProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  // Waits up to `timeout` for exit; the code as Stop returns it.
  int Wait(std::chrono::milliseconds timeout);

  pid_t pid_;
  int stdout_fd_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  bool terminated_ = false;
  int exit_code_ = -1;  // once reaped
};

}  // namespace moe::testing
