#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>
#include <thread>

namespace moe::testing {
namespace {

constexpr std::string_view kGrpcLine = "moe-server: grpc listening on ";
constexpr std::string_view kHttpLine = "moe-server: http listening on ";

// The port of the complete line starting with `prefix` in `buffer`; 0 while there is none,
// -1 if the line is malformed.
int PortOnLine(const std::string& buffer, std::string_view prefix) {
  const size_t at = buffer.find(prefix);
  const size_t eol = at == std::string::npos ? at : buffer.find('\n', at);
  if (eol == std::string::npos) return 0;
  const std::string address = buffer.substr(at + prefix.size(), eol - at - prefix.size());
  const int port = std::atoi(address.substr(address.rfind(':') + 1).c_str());
  if (port <= 0) std::fprintf(stderr, "ServerProcess: bad port line '%s'\n", address.c_str());
  return port > 0 ? port : -1;
}

}  // namespace

std::unique_ptr<ServerProcess> ServerProcess::Start(const std::string& binary,
                                                    const std::vector<std::string>& extra_args,
                                                    std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {binary, "--host",      "127.0.0.1", "--grpc-port",
                                   "0",    "--http-port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    std::perror("ServerProcess: pipe2");
    return nullptr;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("ServerProcess: fork");
    return nullptr;
  }
  if (pid == 0) {  // child: stdout into the pipe, stderr shared with the test
    dup2(out[1], STDOUT_FILENO);
    execv(argv[0], argv.data());
    std::perror("ServerProcess: execv");
    _exit(127);
  }
  close(out[1]);
  std::unique_ptr<ServerProcess> server(new ServerProcess(pid, out[0]));

  // Read stdout until the port line.
  std::string buffer;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    server->grpc_port_ = PortOnLine(buffer, kGrpcLine);
    server->http_port_ = PortOnLine(buffer, kHttpLine);
    if (server->grpc_port_ < 0 || server->http_port_ < 0) return nullptr;
    if (server->grpc_port_ > 0 && server->http_port_ > 0) return server;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::fprintf(stderr, "ServerProcess: no port lines from %s within %lld ms\n", binary.c_str(),
                   static_cast<long long>(timeout.count()));
      return nullptr;
    }
    pollfd pfd = {server->stdout_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[512];
    const ssize_t n = read(server->stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      std::fprintf(stderr, "ServerProcess: %s exited before printing its port (output: %s)\n",
                   binary.c_str(), buffer.c_str());
      return nullptr;
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

ServerProcess::~ServerProcess() {
  if (Stop(std::chrono::seconds(10)) == -1) {
    kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(10));
  }
  close(stdout_fd_);
}

int ServerProcess::Stop(std::chrono::milliseconds timeout) {
  if (!terminated_ && exit_code_ == -1) {
    kill(pid_, SIGTERM);
    terminated_ = true;
  }
  return Wait(timeout);
}

int ServerProcess::Wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (exit_code_ == -1) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (r < 0 || std::chrono::steady_clock::now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code_;
}

}  // namespace moe::testing
