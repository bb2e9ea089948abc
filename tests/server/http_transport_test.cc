// The Beast transport (server/http_server.h) under a scripted handler, driven by raw
// sockets: pipelining, keep-alive, deadlines (idle, head, write), disconnects, the
// listen backlog, a fixed thread count, transport errors and the drain's cut.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace moe::server {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Counters {
  std::atomic<int> cancelled{0};
  std::atomic<int> cut{0};
  std::atomic<int> handled{0};
};

// Never ready on its own (or ready after `ready_ms`).
class TestPending : public PendingResponse {
 public:
  TestPending(Counters& c, int ready_ms)
      : c_(c),
        ready_at_(ready_ms < 0 ? Clock::time_point::max() : Clock::now() + milliseconds(ready_ms)) {
  }
  std::optional<HttpResponse> Poll() override {
    if (Clock::now() < ready_at_) return std::nullopt;
    HttpResponse r;
    r.body = "ready";
    return r;
  }
  void Cancel() override { c_.cancelled++; }
  HttpResponse Cut() override {
    c_.cut++;
    HttpResponse r;
    r.status = 503;
    r.body = "cut";
    return r;
  }

 private:
  Counters& c_;
  Clock::time_point ready_at_;
};

// "tick N\n" every 10 ms, `count` of them (forever when negative); or, as a firehose,
// 64 KiB on every poll.
class TestStream : public ResponseStream {
 public:
  TestStream(Counters& c, int count, bool firehose) : c_(c), count_(count), firehose_(firehose) {}
  bool Poll(std::string* out) override {
    if (firehose_) {
      out->append(64 << 10, 'z');
      return false;
    }
    if (Clock::now() >= next_) {
      *out += "tick " + std::to_string(sent_++) + "\n";
      next_ = Clock::now() + milliseconds(10);
    }
    return count_ >= 0 && sent_ >= count_;
  }
  void Cancel() override { c_.cancelled++; }
  void Cut(std::string* out) override {
    c_.cut++;
    *out += "cut\n";
  }

 private:
  Counters& c_;
  int count_;
  bool firehose_;
  int sent_ = 0;
  Clock::time_point next_ = Clock::now();
};

// Anything: the method, path and body back; /pending/forever, /pending/MS; /stream/5,
// /stream/forever, /firehose.
class ScriptHandler : public HttpHandler {
 public:
  HttpReply Handle(const HttpRequest& request, std::function<void()> wake) override {
    counters.handled++;
    if (request.path.rfind("/pending/", 0) == 0) {
      const std::string ms = request.path.substr(9);
      HttpReply reply;
      const int ready_ms = ms == "forever" ? -1 : std::stoi(ms);
      reply.pending = std::make_unique<TestPending>(counters, ready_ms);
      if (ready_ms >= 0) {  // woken when ready, as the engine's on_event would
        std::thread([ready_ms, wake = std::move(wake)] {
          std::this_thread::sleep_for(milliseconds(ready_ms + 1));
          wake();
        }).detach();
      }
      return reply;
    }
    if (request.path.rfind("/stream/", 0) == 0 || request.path == "/firehose") {
      HttpReply reply;
      reply.response.content_type = "text/plain";
      const bool firehose = request.path == "/firehose";
      const int count = firehose || request.path == "/stream/forever" ? -1 : 5;
      reply.stream = std::make_unique<TestStream>(counters, count, firehose);
      return reply;
    }
    HttpResponse r;
    r.content_type = "text/plain";
    r.body = request.method + " " + request.path + " " + request.body;
    return HttpReply::Whole(std::move(r));
  }
  bool Inline(const HttpRequest& request) const override { return request.method == "GET"; }
  HttpResponse TransportError(int status, std::string message) const override {
    HttpResponse r;
    r.status = status;
    r.body = "transport: " + message;
    return r;
  }
  Counters counters;
};

// A blocking client socket with a receive timeout.
class RawClient {
 public:
  explicit RawClient(int port, milliseconds timeout = milliseconds(5000), bool nodelay = true) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    if (nodelay) setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() { Close(); }
  RawClient(RawClient&& o) noexcept : fd_(o.fd_), connected_(o.connected_) { o.fd_ = -1; }
  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until `done(received)`, EOF or the receive timeout; the bytes read.
  template <class Done>
  std::string ReadUntil(Done done) {
    std::string got;
    char buf[65536];
    while (!done(got)) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        eof_ = n == 0;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  std::string ReadUntilHas(const std::string& what) {
    return ReadUntil([&](const std::string& got) { return got.find(what) != std::string::npos; });
  }
  std::string ReadToEof() {
    return ReadUntil([](const std::string&) { return false; });
  }
  // Whether the peer closed the connection within the receive timeout (bytes before the
  // close are read and dropped).
  bool ClosedByPeer() {
    ReadToEof();
    return eof_;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

std::string Get(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"; }

std::string Post(const std::string& path) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
}

int ThreadCount() {
  int n = 0;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
    closedir(dir);
  }
  return n;
}

// Descriptors for `n` more sockets (client and server ends), or false.
bool HaveDescriptors(rlim_t n) {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) return false;
  if (files.rlim_cur < n && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = std::min(files.rlim_max, n);
    setrlimit(RLIMIT_NOFILE, &files);
  }
  return files.rlim_cur >= n;
}

class HttpTransportTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    auto server = HttpServer::Start(options, handler_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  int port() const { return server_->port(); }

  ScriptHandler handler_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpTransportTest, PipelinedRequestsInOneWriteAreAnsweredInOrder) {
  Start();
  RawClient c(port());
  ASSERT_TRUE(c.connected());
  const std::string post = "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody";
  ASSERT_TRUE(c.Send(Get("/first") + post + Get("/third")));
  const std::string got = c.ReadUntilHas("/third");
  EXPECT_EQ(Count(got, "HTTP/1.1 200 OK"), 3u) << got;
  const size_t first = got.find("GET /first"), second = got.find("POST /second body"),
               third = got.find("GET /third");
  ASSERT_NE(first, std::string::npos) << got;
  ASSERT_NE(second, std::string::npos) << got;
  ASSERT_NE(third, std::string::npos) << got;
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
}

TEST_F(HttpTransportTest, KeepAliveHeadAndExpectContinue) {
  Start();
  RawClient c(port());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(c.Send(Get("/n" + std::to_string(i))));
    const std::string want = "GET /n" + std::to_string(i) + " ";
    const std::string got = c.ReadUntilHas(want);
    ASSERT_NE(got.find(want), std::string::npos) << got;
  }
  // HEAD: the head of the GET, Content-Length and all, and no body.
  ASSERT_TRUE(c.Send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + Get("/after")));
  const std::string got = c.ReadUntilHas("GET /after");
  EXPECT_EQ(got.find("HEAD /h"), std::string::npos) << got;
  EXPECT_NE(got.find("Content-Length: 8"), std::string::npos) << got;  // "HEAD /h "
  // Expect: 100-continue gets its interim response before the body is sent.
  ASSERT_TRUE(
      c.Send("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  const std::string interim = c.ReadUntilHas("\r\n\r\n");
  EXPECT_EQ(interim.rfind("HTTP/1.1 100 Continue", 0), 0u) << interim;
  ASSERT_TRUE(c.Send("abc"));
  const std::string final_response = c.ReadUntilHas("POST /e abc");
  EXPECT_NE(final_response.find("POST /e abc"), std::string::npos) << final_response;
}

// A keep-alive client with Nagle's algorithm on writes a request's head and body
// separately and holds the body until the head is acknowledged: without an immediate ack
// from the server, every request after the first waits out the delayed-ack timer (40 ms).
TEST_F(HttpTransportTest, ANagleClientOnAReusedConnectionIsNotDelayed) {
  Start();
  RawClient c(port(), milliseconds(5000), /*nodelay=*/false);
  const std::string head = "POST /n HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
  std::vector<double> latencies;
  for (int i = 0; i < 10; ++i) {
    const auto start = Clock::now();
    ASSERT_TRUE(c.Send(head));
    ASSERT_TRUE(c.Send("body"));
    ASSERT_NE(c.ReadUntilHas("POST /n body").find("POST /n body"), std::string::npos);
    latencies.push_back(MsSince(start));
  }
  std::sort(latencies.begin(), latencies.end());
  EXPECT_LT(latencies[latencies.size() / 2], 20) << "median request time on one connection";
}

TEST_F(HttpTransportTest, TransportErrorsAreAnsweredAndTheServerGoesOn) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  options.max_header_bytes = 4096;
  Start(options);
  {
    RawClient c(port());
    c.Send("NOT HTTP AT ALL\r\n\r\n");
    const std::string got = c.ReadToEof();
    EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << got;
    EXPECT_NE(got.find("transport: malformed HTTP request"), std::string::npos) << got;
  }
  {
    // Refused from its Content-Length, before a byte of the body is sent.
    RawClient c(port());
    c.Send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
    const std::string got = c.ReadUntilHas("transport:");
    EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
  }
  {
    RawClient c(port());
    c.Send("GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n");
    const std::string got = c.ReadUntilHas("transport:");
    EXPECT_EQ(got.rfind("HTTP/1.1 431", 0), 0u) << got;
  }
  RawClient c(port());
  c.Send(Get("/still"));
  EXPECT_NE(c.ReadUntilHas("/still").find("GET /still"), std::string::npos);
  EXPECT_EQ(handler_.counters.handled.load(), 1);  // none of the bad ones reached it
}

TEST_F(HttpTransportTest, IdleKeepAliveConnectionsCloseAfterTheIdleTimeout) {
  HttpServerOptions options;
  options.idle_timeout = milliseconds(200);
  Start(options);
  RawClient c(port());
  c.Send(Get("/once"));
  c.ReadUntilHas("/once");
  const auto start = Clock::now();
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_GE(MsSince(start), 150);
  EXPECT_LT(MsSince(start), 2000);
}

TEST_F(HttpTransportTest, ABodyThatStallsIsClosedAtTheBodyDeadline) {
  HttpServerOptions options;
  options.body_timeout = milliseconds(300);
  Start(options);
  RawClient c(port());
  const auto start = Clock::now();
  c.Send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b");
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_GE(MsSince(start), 250);
  EXPECT_LT(MsSince(start), 3000);
  EXPECT_EQ(handler_.counters.handled.load(), 0);
}

// Clients that send their head one byte at a time are closed at the head deadline, and
// meanwhile every other client is answered at once.
TEST_F(HttpTransportTest, SlowHeaderClientsAreCutAtTheDeadlineAndDelayNoOne) {
  constexpr int kSlow = 200;
  if (!HaveDescriptors(4 * kSlow + 256)) GTEST_SKIP() << "not enough descriptors";
  HttpServerOptions options;
  options.header_timeout = milliseconds(2000);
  Start(options);
  std::vector<RawClient> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.emplace_back(port(), milliseconds(50));
    ASSERT_TRUE(slow.back().connected());
  }
  const std::string head = "GET /slow HTTP/1.1\r\nHost: x\r\n";
  std::vector<double> latencies;
  const auto start = Clock::now();
  for (size_t byte = 0; byte < head.size() && MsSince(start) < 1500; ++byte) {
    for (RawClient& c : slow) c.Send(head.substr(byte, 1));
    const auto t = Clock::now();
    RawClient probe(port());
    probe.Send(Get("/probe"));
    const std::string got = probe.ReadUntilHas("/probe");
    EXPECT_NE(got.find("GET /probe"), std::string::npos);
    latencies.push_back(MsSince(t));
    std::this_thread::sleep_for(milliseconds(50));
  }
  std::sort(latencies.begin(), latencies.end());
  ASSERT_FALSE(latencies.empty());
  EXPECT_LT(latencies.back(), 500) << "the slowest probe beside " << kSlow << " slow clients";
  // Past the deadline every slow client has been closed.
  std::this_thread::sleep_until(start + milliseconds(2400));
  int closed = 0;
  for (RawClient& c : slow) closed += c.ClosedByPeer();
  EXPECT_EQ(closed, kSlow);
  EXPECT_EQ(handler_.counters.handled.load(), static_cast<int>(latencies.size()));
}

TEST_F(HttpTransportTest, AClientThatClosesHasItsPendingReplyCancelledAtOnce) {
  HttpServerOptions options;
  options.poll_interval = milliseconds(5000);  // not the poll: the socket watch
  Start(options);
  {
    RawClient c(port());
    c.Send(Post("/pending/forever"));
    while (handler_.counters.handled.load() == 0) std::this_thread::sleep_for(milliseconds(1));
    std::this_thread::sleep_for(milliseconds(20));
  }
  const auto start = Clock::now();
  while (handler_.counters.cancelled.load() == 0 && MsSince(start) < 3000) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_EQ(handler_.counters.cancelled.load(), 1);
  EXPECT_LT(MsSince(start), 500);
  EXPECT_EQ(server_->active_replies(), 0);
  // A ready pending reply is written; a pipelined request behind a pending one waits for
  // it and is answered after it.
  RawClient c(port());
  c.Send(Post("/pending/50") + Get("/next"));
  const std::string got = c.ReadUntilHas("GET /next");
  ASSERT_NE(got.find("ready"), std::string::npos) << got;
  EXPECT_LT(got.find("ready"), got.find("GET /next"));
}

TEST_F(HttpTransportTest, StreamsAreChunkedAndAReaderThatStopsIsDroppedAtTheWriteDeadline) {
  HttpServerOptions options;
  options.write_timeout = milliseconds(300);
  options.poll_interval = milliseconds(5);
  Start(options);
  {
    RawClient c(port());
    c.Send(Post("/stream/5"));
    const std::string got = c.ReadUntilHas("\r\n0\r\n\r\n");
    EXPECT_NE(got.find("Transfer-Encoding: chunked"), std::string::npos) << got;
    EXPECT_NE(got.find("tick 4\n"), std::string::npos) << got;
  }
  RawClient c(port());
  int small = 4096;
  setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  c.Send(Post("/firehose"));
  const int before = handler_.counters.cancelled.load();
  const auto start = Clock::now();
  while (handler_.counters.cancelled.load() == before && MsSince(start) < 10000) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(handler_.counters.cancelled.load(), before + 1) << "a client that reads nothing";
  EXPECT_LT(MsSince(start), 5000);
}

TEST_F(HttpTransportTest, ABurstOfAThousandConnectsIsAcceptedWithoutSynRetries) {
  constexpr int kClients = 1000;
  if (!HaveDescriptors(2 * kClients + 256)) GTEST_SKIP() << "not enough descriptors";
  Start();
  std::vector<int> fds;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto start = Clock::now();
  for (int i = 0; i < kClients; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    fds.push_back(fd);
  }
  // Every connect completes well within the 1 s a SYN retransmit would take, and a
  // request on each is answered.
  std::vector<pollfd> polls;
  for (int fd : fds) polls.push_back({fd, POLLOUT, 0});
  int writable = 0;
  while (writable < kClients && MsSince(start) < 5000) {
    poll(polls.data(), polls.size(), 100);
    writable = 0;
    for (pollfd& p : polls) writable += (p.revents & POLLOUT) != 0;
  }
  EXPECT_EQ(writable, kClients);
  // The kernel completes a handshake while the accept queue has room, however busy the
  // server is: only a short backlog makes a connect wait for a SYN retransmit (1 s).
  const double connect_ms = MsSince(start);
  EXPECT_LT(connect_ms, 900) << "connects waited for SYN retransmits";
  const std::string request = Get("/burst");
  for (int fd : fds) send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  int answered = 0;
  for (pollfd& p : polls) p.events = POLLIN;
  std::vector<bool> done(fds.size(), false);
  while (answered < kClients && MsSince(start) < 10000) {
    poll(polls.data(), polls.size(), 100);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!done[i] && (polls[i].revents & POLLIN)) {
        char buf[4096];
        if (recv(fds[i], buf, sizeof(buf), 0) > 0) {
          done[i] = true;
          ++answered;
          polls[i].events = 0;
        }
      }
    }
  }
  EXPECT_EQ(answered, kClients);
  for (int fd : fds) close(fd);
}

TEST_F(HttpTransportTest, TheThreadCountDoesNotDependOnTheConnections) {
  constexpr int kIdle = 300, kStreams = 50;
  if (!HaveDescriptors(2 * (kIdle + kStreams) + 256)) GTEST_SKIP() << "not enough descriptors";
  HttpServerOptions options;
  options.io_threads = 2;
  options.worker_threads = 2;
  Start(options);
  const int threads = ThreadCount();
  std::vector<RawClient> clients;
  for (int i = 0; i < kIdle; ++i) {
    clients.emplace_back(port());
    clients.back().Send(Get("/idle"));
  }
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back(port());
    clients.back().Send(Post("/stream/forever"));
  }
  const auto start = Clock::now();
  while (server_->active_replies() < kStreams && MsSince(start) < 5000) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(server_->active_replies(), kStreams);
  EXPECT_EQ(server_->connections(), kIdle + kStreams);
  EXPECT_EQ(ThreadCount(), threads) << "threads with " << kIdle + kStreams << " connections";
}

TEST_F(HttpTransportTest, ShutdownLetsTheGraceRunThenCutsWithClearWordsAndClosesEverything) {
  HttpServerOptions options;
  options.poll_interval = milliseconds(20);
  Start(options);
  RawClient idle(port());
  idle.Send(Get("/idle"));
  idle.ReadUntilHas("/idle");
  RawClient pending(port());
  pending.Send(Post("/pending/forever"));
  RawClient stream(port());
  stream.Send(Post("/stream/forever"));
  RawClient finishing(port());
  finishing.Send(Post("/pending/200"));
  while (server_->active_replies() < 3) std::this_thread::sleep_for(milliseconds(1));

  const auto start = Clock::now();
  std::thread shutdown([&] { server_->Shutdown(milliseconds(300)); });
  EXPECT_TRUE(idle.ClosedByPeer()) << "an idle keep-alive connection stays open in a drain";
  const std::string finished = finishing.ReadToEof();
  EXPECT_NE(finished.find("ready"), std::string::npos) << "a reply that ends within the grace";
  EXPECT_NE(finished.find("Connection: close"), std::string::npos) << finished;
  const std::string cut = pending.ReadToEof();
  EXPECT_EQ(cut.rfind("HTTP/1.1 503", 0), 0u) << cut;
  EXPECT_NE(cut.find("\r\n\r\ncut"), std::string::npos) << cut;
  const std::string streamed = stream.ReadToEof();
  EXPECT_NE(streamed.find("tick 0"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("cut\n\r\n0\r\n\r\n"), std::string::npos)
      << "the cut words, then the last chunk";
  shutdown.join();
  const double took = MsSince(start);
  EXPECT_GE(took, 290);
  EXPECT_LT(took, 300 + 1500) << "grace + margin";
  EXPECT_EQ(handler_.counters.cut.load(), 2);
  EXPECT_EQ(handler_.counters.cancelled.load(), 0);
  RawClient after(port(), milliseconds(500));
  EXPECT_FALSE(after.connected() && after.Send(Get("/x")) &&
               after.ReadToEof().find("GET /x") != std::string::npos);
}

}  // namespace
}  // namespace moe::server
