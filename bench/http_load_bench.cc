// http_load_bench: holds thousands of connections against a running moe-server's HTTP
// port and measures whether everyone else is still served (issue 10's targets):
//   --idle N   keep-alive connections that made one request and then sit idle;
//   --sse M    concurrent SSE completions (each connection asks for the next one when
//              its stream ends, so M stay live);
//   --slow K   clients that send their request head one byte per second (reconnecting
//              when the server cuts them at its head deadline);
// while a probe thread times GET /health on a fresh connection every --probe-ms. It
// reports the probe's latency percentiles over the hold, how many of each kind stayed
// open, and the server's thread count (/proc/PID/status) before and under the load.
// One epoll thread drives every connection. bench/http_load.sh starts the server.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int ServerThreads(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

enum class Kind { kIdle, kSse, kSlow };

struct Conn {
  int fd = -1;
  Kind kind = Kind::kIdle;
  std::string out;  // what is left to send (slow: the whole head, one byte at a time)
  size_t sent = 0;
  std::string in;         // idle: the response so far
  bool answered = false;  // idle: its one response arrived
  Clock::time_point next_byte;
};

class Load {
 public:
  Load(int port, std::string sse_body) : port_(port), sse_body_(std::move(sse_body)) {
    epoll_ = epoll_create1(0);
  }

  bool Open(Kind kind) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr = Loopback(port_);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
        errno != EINPROGRESS) {
      close(fd);
      return false;
    }
    if (fd >= static_cast<int>(conns_.size())) conns_.resize(fd + 1);
    Conn& c = conns_[fd];
    c = Conn{};
    c.fd = fd;
    c.kind = kind;
    switch (kind) {
      case Kind::kIdle:
        c.out = "GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";
        break;
      case Kind::kSse:
        c.out =
            "POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: "
            "application/json\r\nContent-Length: " +
            std::to_string(sse_body_.size()) + "\r\n\r\n" + sse_body_;
        break;
      case Kind::kSlow:
        c.out =
            "GET /health HTTP/1.1\r\nHost: bench\r\nX-Slow: " + std::string(200, 's') + "\r\n\r\n";
        c.next_byte = Clock::now();
        break;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    ++open_[static_cast<int>(kind)];
    return true;
  }

  // One pass of the event loop (up to `wait`), plus the slow clients' next bytes.
  void Step(milliseconds wait) {
    epoll_event events[512];
    const int n = epoll_wait(epoll_, events, 512, static_cast<int>(wait.count()));
    for (int i = 0; i < n; ++i) {
      Conn& c = conns_[events[i].data.fd];
      if (c.fd < 0) continue;
      if (events[i].events & EPOLLOUT) Flush(c);
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) Read(c);
    }
    const Clock::time_point now = Clock::now();
    if (now - last_slow_ < milliseconds(50)) return;
    last_slow_ = now;
    for (Conn& c : conns_) {
      if (c.fd >= 0 && c.kind == Kind::kSlow && now >= c.next_byte && c.sent < c.out.size()) {
        if (send(c.fd, c.out.data() + c.sent, 1, MSG_NOSIGNAL) == 1) ++c.sent;
        c.next_byte = now + std::chrono::seconds(1);
      }
    }
  }

  int open(Kind kind) const { return open_[static_cast<int>(kind)]; }
  int idle_answered() const { return idle_answered_; }
  int64_t closed(Kind kind) const { return closed_[static_cast<int>(kind)]; }
  int64_t sse_events() const { return sse_events_; }
  int64_t sse_done() const { return sse_done_; }
  int64_t sse_errors() const { return sse_errors_; }

 private:
  void Flush(Conn& c) {
    if (c.kind == Kind::kSlow) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = c.fd;
      epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
      return;  // its bytes go out in Step, one per second
    }
    while (c.sent < c.out.size()) {
      const ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      c.sent += static_cast<size_t>(n);
    }
    if (c.sent == c.out.size()) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = c.fd;
      epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
    }
  }

  void Read(Conn& c) {
    char buf[65536];
    while (true) {
      const ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        const std::string_view data(buf, static_cast<size_t>(n));
        if (c.kind == Kind::kIdle && !c.answered) {
          c.in.append(data);
          if (c.in.find("\"ok\"") != std::string::npos) {
            c.answered = true;
            ++idle_answered_;
          }
        } else if (c.kind == Kind::kSse) {
          for (size_t p = data.find("data: "); p != std::string_view::npos;
               p = data.find("data: ", p + 1)) {
            ++sse_events_;
          }
          if (data.find("\"error\"") != std::string_view::npos) ++sse_errors_;
          if (data.find("data: [DONE]") != std::string_view::npos) {
            ++sse_done_;  // the next completion on the same keep-alive connection
            c.sent = 0;
            Flush(c);
            if (c.sent < c.out.size()) {
              epoll_event ev{};
              ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
              ev.data.fd = c.fd;
              epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
            }
          }
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      break;  // closed or failed
    }
    const Kind kind = c.kind;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    if (kind == Kind::kIdle && c.answered) --idle_answered_;
    c.fd = -1;
    --open_[static_cast<int>(kind)];
    ++closed_[static_cast<int>(kind)];
    if (kind != Kind::kIdle) Open(kind);  // keep the number of streams and slow clients
  }

  int port_;
  std::string sse_body_;
  int epoll_;
  std::vector<Conn> conns_;
  int open_[3] = {0, 0, 0};
  int64_t closed_[3] = {0, 0, 0};
  int idle_answered_ = 0;
  int64_t sse_events_ = 0, sse_done_ = 0, sse_errors_ = 0;
  Clock::time_point last_slow_ = Clock::now();
};

// GET /health on a fresh connection: the milliseconds to the whole response, or -1.
double ProbeHealth(int port) {
  const Clock::time_point start = Clock::now();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr = Loopback(port);
  double ms = -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
    send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    std::string got;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
      got.append(buf, static_cast<size_t>(n));
      if (got.find("\"ok\"") != std::string::npos) break;
    }
    if (got.find("\"ok\"") != std::string::npos) ms = Ms(Clock::now() - start);
  }
  close(fd);
  return ms;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"http_load_bench: many idle, streaming and slow HTTP clients against moe-server"};
  int port = 8000, pid = 0, idle = 10000, sse = 1000, slow = 500, sse_tokens = 900;
  double hold_s = 20, probe_ms = 20;
  std::string output;
  app.add_option("--port", port, "moe-server's HTTP port on 127.0.0.1")->required();
  app.add_option("--pid", pid, "moe-server's process id (for its thread count)")->required();
  app.add_option("--idle", idle, "idle keep-alive connections")->capture_default_str();
  app.add_option("--sse", sse, "concurrent SSE completions")->capture_default_str();
  app.add_option("--slow", slow, "slow-header clients (one byte a second)")->capture_default_str();
  app.add_option("--sse-tokens", sse_tokens, "max_tokens of each SSE completion")
      ->capture_default_str();
  app.add_option("--hold", hold_s, "seconds to hold the load and probe")->capture_default_str();
  app.add_option("--probe-ms", probe_ms, "milliseconds between /health probes")
      ->capture_default_str();
  app.add_option("--output", output, "JSON result file");
  CLI11_PARSE(app, argc, argv);

  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);

  const std::string sse_body = nlohmann::json{
      {"prompt", "Once upon a time"},
      {"max_tokens", sse_tokens},
      {"ignore_eos", true},
      {"stream", true}}.dump();
  Load load(port, sse_body);
  const int threads_before = ServerThreads(pid);

  std::atomic<bool> stop{false}, holding{false};
  std::vector<double> ramp_probes, hold_probes;
  int probe_failures = 0;
  std::thread prober([&] {
    while (!stop) {
      const double ms = ProbeHealth(port);
      if (ms < 0) {
        ++probe_failures;
      } else {
        (holding ? hold_probes : ramp_probes).push_back(ms);
      }
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(probe_ms));
    }
  });

  // Ramp: 500 connects at a time, each batch given a moment to be accepted.
  const Clock::time_point ramp_start = Clock::now();
  std::vector<Kind> plan;
  plan.insert(plan.end(), idle, Kind::kIdle);
  plan.insert(plan.end(), sse, Kind::kSse);
  plan.insert(plan.end(), slow, Kind::kSlow);
  std::shuffle(plan.begin(), plan.end(), std::mt19937(1));  // the kinds mixed as they open
  size_t opened = 0;
  int failed_opens = 0;
  while (opened < plan.size()) {
    for (int i = 0; i < 500 && opened < plan.size(); ++i)
      failed_opens += !load.Open(plan[opened++]);
    const Clock::time_point batch = Clock::now();
    while (Clock::now() - batch < milliseconds(50)) load.Step(milliseconds(10));
  }
  // Until every idle connection has had its answer (or 30 s).
  while (load.idle_answered() < load.open(Kind::kIdle) &&
         Clock::now() - ramp_start < std::chrono::seconds(30)) {
    load.Step(milliseconds(10));
  }
  const double ramp_s = Ms(Clock::now() - ramp_start) / 1000;

  holding = true;
  const Clock::time_point hold_start = Clock::now();
  int threads_max = ServerThreads(pid), min_idle = load.open(Kind::kIdle),
      min_sse = load.open(Kind::kSse), min_slow = load.open(Kind::kSlow);
  Clock::time_point last_sample = hold_start;
  while (Clock::now() - hold_start < std::chrono::duration<double>(hold_s)) {
    load.Step(milliseconds(10));
    if (Clock::now() - last_sample >= milliseconds(500)) {
      last_sample = Clock::now();
      threads_max = std::max(threads_max, ServerThreads(pid));
      min_idle = std::min(min_idle, load.open(Kind::kIdle));
      min_sse = std::min(min_sse, load.open(Kind::kSse));
      min_slow = std::min(min_slow, load.open(Kind::kSlow));
    }
  }
  holding = false;
  stop = true;
  prober.join();

  nlohmann::json result = {
      {"config",
       {{"idle", idle},
        {"sse", sse},
        {"slow", slow},
        {"hold_s", hold_s},
        {"probe_ms", probe_ms},
        {"sse_tokens", sse_tokens}}},
      {"ramp_s", ramp_s},
      {"failed_opens", failed_opens},
      {"health_probe_ms",
       {{"hold_count", hold_probes.size()},
        {"hold_p50", Percentile(hold_probes, 0.50)},
        {"hold_p99", Percentile(hold_probes, 0.99)},
        {"hold_max", Percentile(hold_probes, 1.0)},
        {"ramp_count", ramp_probes.size()},
        {"ramp_p99", Percentile(ramp_probes, 0.99)},
        {"failures", probe_failures}}},
      {"held_min", {{"idle", min_idle}, {"sse", min_sse}, {"slow", min_slow}}},
      {"idle_answered_at_end", load.idle_answered()},
      {"idle_closed_by_server", load.closed(Kind::kIdle)},
      {"slow_cut_by_server", load.closed(Kind::kSlow)},
      {"sse",
       {{"events", load.sse_events()},
        {"completed", load.sse_done()},
        {"errors", load.sse_errors()},
        {"closed", load.closed(Kind::kSse)}}},
      {"server_threads", {{"before", threads_before}, {"max_under_load", threads_max}}},
  };
  std::cout << result.dump(2) << std::endl;
  if (!output.empty()) std::ofstream(output) << result.dump(2) << "\n";
  const bool ok = Percentile(hold_probes, 0.99) >= 0 && Percentile(hold_probes, 0.99) < 50 &&
                  probe_failures == 0 && min_idle == idle && min_sse == sse &&
                  threads_max == threads_before;
  std::cerr << "http_load_bench: " << (ok ? "PASS" : "FAIL")
            << " (target: /health p99 < 50 ms, every connection held, no new server thread)\n";
  return ok ? 0 : 1;
}
