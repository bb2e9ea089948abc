#include "server/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"

namespace moe::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using asio::experimental::awaitable_operators::operator||;

// Completion token: errors come back as values (STYLE.md: no exceptions on the I/O path).
constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// How long the words of a cut reply, a TLS close or a lingering close may take.
constexpr std::chrono::milliseconds kCloseTimeout{1000};

// Wakes one connection's coroutine from any thread: posts `on_wake` onto its io_context
// unless a wake is already pending or the connection has ended. The executor is a plain
// pointer to the io_context, so a Waker outliving its connection is harmless.
class Waker : public std::enable_shared_from_this<Waker> {
 public:
  explicit Waker(asio::io_context::executor_type executor) : executor_(executor) {}

  // What runs on the connection's thread for a wake; null once the connection ended.
  void Bind(std::function<void()> on_wake) {
    std::lock_guard<std::mutex> lock(mu_);
    on_wake_ = std::move(on_wake);
  }

  void Wake() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!on_wake_ || pending_) return;
    pending_ = true;
    asio::post(executor_, [self = shared_from_this()] { self->Run(); });
  }

 private:
  void Run() {
    std::function<void()> on_wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = false;
      on_wake = on_wake_;
    }
    if (on_wake) on_wake();
  }

  std::mutex mu_;
  asio::io_context::executor_type executor_;
  std::function<void()> on_wake_;
  bool pending_ = false;
};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The path of a request target: the query dropped, %XX decoded (a bad escape stays as
// written).
std::string TargetPath(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::string out;
  out.reserve(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < target.size()) {
      const int hi = HexDigit(target[i + 1]), lo = HexDigit(target[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(target[i]);
  }
  return out;
}

}  // namespace

struct HttpServer::Core {
  HttpServerOptions options;
  HttpHandler& handler;
  std::vector<std::unique_ptr<asio::io_context>> contexts;  // one per I/O thread
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::optional<asio::thread_pool> workers;
  std::optional<asio::ssl::context> tls;
  std::optional<tcp::acceptor> acceptor;  // on contexts[0]
  std::vector<std::thread> threads;
  int port = -1;
  size_t next_context = 0;  // the accept loop's, on contexts[0]'s thread

  std::atomic<bool> closing{false};  // no more accepting; idle connections close
  std::atomic<bool> cutting{false};  // active replies end now with their Cut words
  std::atomic<int> active{0};
  std::atomic<int> connections{0};
  bool shut_down = false;
  std::mutex mu;
  std::unordered_set<std::shared_ptr<Waker>> sessions;  // guarded by mu

  Core(HttpServerOptions o, HttpHandler& h) : options(std::move(o)), handler(h) {}

  void WakeAll() {
    std::vector<std::shared_ptr<Waker>> all;
    {
      std::lock_guard<std::mutex> lock(mu);
      all.assign(sessions.begin(), sessions.end());
    }
    for (const auto& waker : all) waker->Wake();
  }

  absl::Status Listen() {
    boost::system::error_code ec;
    asio::ip::address address = asio::ip::make_address(options.host, ec);
    if (ec) {
      tcp::resolver resolver(*contexts[0]);
      auto results = resolver.resolve(options.host, "", ec);
      if (ec || results.empty()) {
        return absl::UnavailableError(absl::StrCat("cannot resolve the HTTP host ",
                                                   ToAbsl(options.host), ": ", ec.message()));
      }
      address = results.begin()->endpoint().address();
    }
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
    acceptor.emplace(*contexts[0]);
    auto fail = [&](std::string_view what) {
      return absl::UnavailableError(absl::StrCat("cannot ", ToAbsl(what), " the HTTP port ",
                                                 options.port, " on ", ToAbsl(options.host), ": ",
                                                 ec.message()));
    };
    if (acceptor->open(endpoint.protocol(), ec)) return fail("open");
    // SO_REUSEADDR for quick restarts; never SO_REUSEPORT, which would let a second
    // server share this port's connections.
    if (acceptor->set_option(asio::socket_base::reuse_address(true), ec)) return fail("configure");
    if (acceptor->bind(endpoint, ec)) return fail("bind");
    if (acceptor->listen(options.backlog, ec)) return fail("listen on");
    port = acceptor->local_endpoint(ec).port();
    return absl::OkStatus();
  }

  asio::awaitable<void> Accept();
  template <class Stream>
  asio::awaitable<void> Serve(Stream stream, asio::io_context& context);
};

namespace {

// One connection: the read/respond loop and its waits, over a plain or a TLS stream.
template <class Stream>
class Connection {
 public:
  Connection(HttpServer::Core& core, Stream& stream, asio::steady_timer& timer)
      : core_(core), stream_(stream), timer_(timer) {}

  // Serves requests until the connection closes, fails or times out.
  asio::awaitable<void> Run(std::shared_ptr<Waker> waker) {
    waker_ = std::move(waker);
    const HttpServerOptions& o = core_.options;
    while (!core_.closing) {
      idle_ = true;
      if (buffer_.size() == 0) {  // keep-alive: wait for the next request's first byte
        Lowest().expires_after(o.idle_timeout);
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(16 << 10), kNoThrow);
        if (ec) co_return;
        buffer_.commit(n);
      }
      idle_ = false;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(o.max_header_bytes));
      parser.body_limit(o.max_body_bytes);
      Lowest().expires_after(o.header_timeout);  // the whole head, from its first byte
      {
        auto [ec, n] = co_await http::async_read_header(stream_, buffer_, parser, kNoThrow);
        if (ec) {
          if (ec == http::error::header_limit) {
            co_await Refuse(431, absl::StrCat("the request head is larger than ",
                                              o.max_header_bytes, " bytes"));
          } else if (ec == http::error::body_limit) {  // Content-Length says so
            co_await Refuse(
                413, absl::StrCat("the request body is larger than ", o.max_body_bytes, " bytes"));
          } else if (ec != beast::error::timeout && ec != http::error::end_of_stream &&
                     ec != asio::error::eof && ec != asio::error::operation_aborted &&
                     ec != asio::error::connection_reset) {
            co_await Refuse(400, absl::StrCat("malformed HTTP request: ", ec.message()));
          }
          co_return;
        }
      }
      if (!parser.is_done()) {
        // The body is still coming: acknowledge the head now. A client with Nagle's
        // algorithm on (cpp-httplib's default) holds its body until the head is acked,
        // and the kernel would delay that ack by up to 40 ms on a reused connection.
        const int one = 1;
        setsockopt(Lowest().socket().native_handle(), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
        if (auto expect = parser.get()[http::field::expect];
            beast::iequals(expect, "100-continue")) {
          http::response<http::empty_body> go_on{http::status::continue_, 11};
          Lowest().expires_after(o.write_timeout);
          auto [ec, n] = co_await http::async_write(stream_, go_on, kNoThrow);
          if (ec) co_return;
        }
        Lowest().expires_after(o.body_timeout);
        auto [ec, n] = co_await http::async_read(stream_, buffer_, parser, kNoThrow);
        if (ec) {
          if (ec == http::error::body_limit) {
            co_await Refuse(
                413, absl::StrCat("the request body is larger than ", o.max_body_bytes, " bytes"));
          } else if (ec != beast::error::timeout && ec != http::error::end_of_stream &&
                     ec != asio::error::eof && ec != asio::error::connection_reset) {
            co_await Refuse(400, absl::StrCat("malformed HTTP request: ", ec.message()));
          }
          co_return;
        }
      }
      Lowest().expires_never();

      http::request<http::string_body> message = parser.release();
      HttpRequest request;
      request.method = std::string(message.method_string());
      request.path = TargetPath(message.target());
      for (const auto& field : message) {
        request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      }
      request.body = std::move(message.body());
      head_only_ = message.method() == http::verb::head;
      keep_alive_ = message.keep_alive();

      std::function<void()> wake = [weak = std::weak_ptr<Waker>(waker_)] {
        if (std::shared_ptr<Waker> waker = weak.lock()) waker->Wake();
      };
      HttpReply reply;
      if (core_.handler.Inline(request)) {
        reply = core_.handler.Handle(request, std::move(wake));
      } else {
        reply = co_await asio::co_spawn(
            *core_.workers,
            [&]() -> asio::awaitable<HttpReply> {
              co_return core_.handler.Handle(request, std::move(wake));
            },
            asio::use_awaitable);
      }
      bool ok = false;
      if (reply.stream) {
        ok = co_await WriteStream(reply.response, *reply.stream);
      } else if (reply.pending) {
        ok = co_await WritePending(*reply.pending);
      } else {
        ok = co_await WriteWhole(std::move(reply.response));
      }
      if (!ok || !keep_alive_) break;
    }
    co_await Close();
  }

  // Called on this connection's thread for each wake.
  void OnWake() {
    timer_.cancel();
    if (idle_ && core_.closing) Lowest().cancel();
  }

 private:
  auto& Lowest() { return beast::get_lowest_layer(stream_); }

  // Keep-alive unless the client or a drain says otherwise.
  bool KeepAlive() const { return keep_alive_ && !core_.closing; }

  template <class Message>
  void SetHeaders(Message& message, const HttpResponse& response) {
    message.set(http::field::server, "moe-serve");
    message.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) message.set(name, value);
    message.keep_alive(KeepAlive());
  }

  asio::awaitable<bool> WriteWhole(HttpResponse response) {
    Lowest().expires_after(core_.options.write_timeout);
    if (head_only_) {
      http::response<http::empty_body> message;
      message.result(static_cast<unsigned>(response.status));
      SetHeaders(message, response);
      message.content_length(response.body.size());
      http::response_serializer<http::empty_body> serializer(message);
      serializer.split(true);
      auto [ec, n] = co_await http::async_write_header(stream_, serializer, kNoThrow);
      co_return !ec;
    }
    http::response<http::string_body> message;
    message.result(static_cast<unsigned>(response.status));
    SetHeaders(message, response);
    message.body() = std::move(response.body);
    message.prepare_payload();
    auto [ec, n] = co_await http::async_write(stream_, message, kNoThrow);
    co_return !ec;
  }

  // An error found before the request was read whole: the response, then a lingering
  // close (the rest of what the client sends is read and dropped for a moment, so that
  // it sees the response rather than a reset).
  asio::awaitable<void> Refuse(int status, std::string message) {
    keep_alive_ = false;
    head_only_ = false;
    if (!co_await WriteWhole(core_.handler.TransportError(status, std::move(message)))) co_return;
    boost::system::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    Lowest().expires_after(kCloseTimeout);
    size_t drained = 0;
    while (drained < (4u << 20)) {
      buffer_.clear();
      auto [read_ec, n] = co_await stream_.async_read_some(buffer_.prepare(16 << 10), kNoThrow);
      if (read_ec) break;
      drained += n;
    }
  }

  enum class Woke { kWake, kGone };

  // Waits for a wake or the poll interval. While `watch_` (no bytes of a next request
  // are known), also watches the socket: a client that closed it is gone.
  asio::awaitable<Woke> Wait() {
    timer_.expires_after(core_.options.poll_interval);
    if (!watch_ || buffer_.size() > 0) {
      co_await timer_.async_wait(kNoThrow);
      co_return Woke::kWake;
    }
    auto& socket = Lowest().socket();
    auto which = co_await (timer_.async_wait(kNoThrow) ||
                           socket.async_wait(tcp::socket::wait_read, kNoThrow));
    if (which.index() == 0) co_return Woke::kWake;
    if (std::get<0>(std::get<1>(which))) co_return Woke::kGone;
    char byte;
    const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) co_return Woke::kGone;  // orderly close
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) co_return Woke::kGone;
    watch_ = false;  // the next request's bytes: it is still there
    co_return Woke::kWake;
  }

  struct Active {
    explicit Active(std::atomic<int>& n) : count(n) { count.fetch_add(1); }
    ~Active() { count.fetch_sub(1); }
    std::atomic<int>& count;
  };

  asio::awaitable<bool> WritePending(PendingResponse& pending) {
    Active active(core_.active);
    watch_ = true;
    std::optional<HttpResponse> response;
    while (true) {
      if (core_.cutting) {
        response = pending.Cut();
        keep_alive_ = false;
        break;
      }
      if ((response = pending.Poll())) break;
      if (co_await Wait() == Woke::kGone) {
        pending.Cancel();
        co_return false;
      }
    }
    if (core_.cutting) Lowest().expires_after(kCloseTimeout);
    co_return co_await WriteWhole(*std::move(response));
  }

  asio::awaitable<bool> WriteChunk(const std::string& data) {
    Lowest().expires_after(core_.cutting ? kCloseTimeout : core_.options.write_timeout);
    auto [ec, n] = co_await asio::async_write(
        stream_, http::make_chunk(asio::const_buffer(data.data(), data.size())), kNoThrow);
    co_return !ec;
  }

  asio::awaitable<bool> WriteStream(const HttpResponse& head, ResponseStream& stream) {
    Active active(core_.active);
    watch_ = true;
    {
      http::response<http::empty_body> message;
      message.result(static_cast<unsigned>(head.status));
      SetHeaders(message, head);
      message.chunked(true);
      http::response_serializer<http::empty_body> serializer(message);
      Lowest().expires_after(core_.options.write_timeout);
      auto [ec, n] = co_await http::async_write_header(stream_, serializer, kNoThrow);
      if (ec) {
        stream.Cancel();
        co_return false;
      }
    }
    std::string out;
    while (true) {
      out.clear();
      bool done;
      if (core_.cutting) {
        stream.Cut(&out);
        keep_alive_ = false;
        done = true;
      } else {
        done = stream.Poll(&out);
      }
      if (!out.empty() && !co_await WriteChunk(out)) {
        stream.Cancel();
        co_return false;
      }
      if (done) break;
      if (out.empty() && co_await Wait() == Woke::kGone) {
        stream.Cancel();
        co_return false;
      }
    }
    Lowest().expires_after(core_.cutting ? kCloseTimeout : core_.options.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream_, http::make_chunk_last(), kNoThrow);
    co_return !ec;
  }

  asio::awaitable<void> Close() {
    Lowest().expires_after(kCloseTimeout);
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      auto [ec] = co_await stream_.async_shutdown(kNoThrow);
    }
    boost::system::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  HttpServer::Core& core_;
  Stream& stream_;
  asio::steady_timer& timer_;
  std::shared_ptr<Waker> waker_;
  beast::flat_buffer buffer_;
  bool idle_ = true;
  bool head_only_ = false;
  bool keep_alive_ = true;
  bool watch_ = false;
};

}  // namespace

template <class Stream>
asio::awaitable<void> HttpServer::Core::Serve(Stream stream, asio::io_context& context) {
  asio::steady_timer timer(context);
  Connection<Stream> connection(*this, stream, timer);
  auto waker = std::make_shared<Waker>(context.get_executor());
  waker->Bind([&connection] { connection.OnWake(); });
  {
    std::lock_guard<std::mutex> lock(mu);
    sessions.insert(waker);
  }
  struct Leave {
    Core& core;
    std::shared_ptr<Waker>& waker;
    ~Leave() {
      waker->Bind(nullptr);
      std::lock_guard<std::mutex> lock(core.mu);
      core.sessions.erase(waker);
      core.connections.fetch_sub(1);
    }
  } leave{*this, waker};
  if (closing) co_return;
  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    beast::get_lowest_layer(stream).expires_after(options.header_timeout);
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kNoThrow);
    if (ec) co_return;
  }
  co_await connection.Run(waker);
}

asio::awaitable<void> HttpServer::Core::Accept() {
  asio::steady_timer backoff(*contexts[0]);
  auto on_done = [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::cerr << "moe-server: HTTP connection ended by an exception: " << x.what() << "\n";
    }
  };
  while (true) {
    asio::io_context& context = *contexts[next_context++ % contexts.size()];
    auto [ec, socket] = co_await acceptor->async_accept(context, kNoThrow);
    if (ec) {
      if (closing || ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      // Out of descriptors or memory: wait a moment instead of spinning (the pending
      // connections stay in the backlog).
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(kNoThrow);
      continue;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    connections.fetch_add(1);
    if (tls) {
      asio::co_spawn(context,
                     Serve(beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls), context),
                     on_done);
    } else {
      asio::co_spawn(context, Serve(beast::tcp_stream(std::move(socket)), context), on_done);
    }
  }
}

HttpServer::HttpServer(std::unique_ptr<Core> core) : core_(std::move(core)) {}

HttpServer::~HttpServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              HttpHandler& handler) {
  if (options.io_threads < 1 || options.worker_threads < 1) {
    return absl::InvalidArgumentError("HTTP: io_threads and worker_threads must be at least 1");
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError("HTTP TLS: a certificate and a key go together");
  }
  auto core = std::make_unique<Core>(std::move(options), handler);
  const HttpServerOptions& o = core->options;
  if (!o.tls_cert_pem.empty()) {
    core->tls.emplace(asio::ssl::context::tls_server);
    asio::ssl::context& tls = *core->tls;
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    tls.use_certificate_chain(asio::buffer(o.tls_cert_pem), ec);
    if (!ec) tls.use_private_key(asio::buffer(o.tls_key_pem), asio::ssl::context::pem, ec);
    if (ec || SSL_CTX_check_private_key(tls.native_handle()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTP TLS: cannot use the certificate and key (not PEM, or they do not match)",
          ec ? absl::StrCat(": ", ec.message()) : ""));
    }
  }
  for (int i = 0; i < o.io_threads; ++i) {
    core->contexts.push_back(std::make_unique<asio::io_context>(1));
    core->guards.push_back(asio::make_work_guard(*core->contexts.back()));
  }
  absl::Status listening = core->Listen();
  if (!listening.ok()) return listening;
  core->workers.emplace(static_cast<size_t>(o.worker_threads));
  Core* raw = core.get();
  asio::co_spawn(*core->contexts[0], raw->Accept(), asio::detached);
  for (auto& context : core->contexts) {
    core->threads.emplace_back([context = context.get()] { context->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(core)));
}

int HttpServer::port() const { return core_->port; }
int HttpServer::active_replies() const { return core_->active.load(); }
int HttpServer::connections() const { return core_->connections.load(); }

void HttpServer::Shutdown(std::chrono::milliseconds grace) {
  Core& core = *core_;
  if (core.shut_down) return;
  core.shut_down = true;
  core.closing = true;
  asio::post(*core.contexts[0], [&core] {
    boost::system::error_code ignored;
    core.acceptor->close(ignored);
  });
  core.WakeAll();  // idle connections close
  auto wait_until = [&](Clock::time_point end, auto done) {
    while (!done() && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  wait_until(Clock::now() + grace, [&] { return core.active.load() == 0; });
  core.cutting = true;
  core.WakeAll();
  wait_until(Clock::now() + kCloseTimeout + std::chrono::milliseconds(200),
             [&] { return core.connections.load() == 0; });
  core.workers->join();  // handlers in progress finish
  core.guards.clear();
  for (auto& context : core.contexts) context->stop();
  for (std::thread& thread : core.threads) thread.join();
  core.threads.clear();
  core.acceptor.reset();
  core.contexts.clear();  // destroys what is left of the connections
}

}  // namespace moe::server
