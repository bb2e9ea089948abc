// moe-server: loads a Hugging Face MoE checkpoint, runs the serving engine and serves it
// over gRPC (moe.v1.Serving, grpc.health.v1, reflection). Prints one line
// "moe-server: grpc listening on HOST:PORT" on stdout once it serves (tests parse it).
// SIGTERM or SIGINT: stop admitting, report NOT_SERVING, let running requests finish
// within --drain-seconds, shut down, exit 0. A second signal skips the grace period.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "base/cli_checks.h"
#include "engine/loader.h"
#include "scheduler/serving_engine.h"
#include "server/api_keys.h"
#include "server/frontend.h"
#include "server/grpc_service.h"
#include "server/http_frontend.h"
#include "server/metrics.h"
#include "server/model_flags.h"
#include "server/port_check.h"

namespace {

using std::chrono::milliseconds;

// Self-pipe: the handler only writes the signal number; the main thread reads it.
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signo) {
  const int saved_errno = errno;
  const char byte = static_cast<char>(signo);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved_errno;
}

bool InstallSignalHandlers() {
  if (pipe(g_signal_pipe) != 0) return false;
  for (int fd : g_signal_pipe) fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &action, nullptr) == 0 && sigaction(SIGINT, &action, nullptr) == 0;
}

// Blocks up to `timeout` (forever if negative) for a signal; its number, or 0.
int WaitForSignal(milliseconds timeout) {
  pollfd pfd = {g_signal_pipe[0], POLLIN, 0};
  int ready;
  do {  // the handler itself interrupts poll (EINTR); the byte it wrote is read below
    ready = poll(&pfd, 1, timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) return 0;  // timeout
  char byte = 0;
  return read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe-server: serve a Mixture-of-Experts model over gRPC and OpenAI-compatible HTTP"};
  std::string host = "127.0.0.1";
  int grpc_port = 50051;
  int http_port = 8000;
  std::vector<std::string> served_model_names;
  size_t max_body_bytes = 1 << 20;
  double drain_seconds = 30;
  moe::server::ModelFlags model_flags;
  moe::ServingOptions engine_options;
  moe::server::HttpServerOptions http_transport;
  double http_idle_timeout = 60, http_header_timeout = 10, http_body_timeout = 30,
         http_write_timeout = 30;
  moe::server::AddModelFlags(app, &model_flags);
  app.add_option("--host", host, "Address to listen on")->capture_default_str();
  app.add_option("--grpc-port", grpc_port, "gRPC port; 0 picks a free one")
      ->capture_default_str()
      ->check(moe::cli::Between<int>(0, 65535));
  app.add_option("--http-port", http_port,
                 "HTTP (OpenAI-compatible) port; 0 picks a free one, -1 serves no HTTP")
      ->capture_default_str()
      ->check(moe::cli::Between<int>(-1, 65535));
  app.add_option("--served-model-name", served_model_names,
                 "Names HTTP requests may give as \"model\" (several allowed; the first is "
                 "the one responses carry; \"default\" is always accepted); default: the "
                 "model directory's name");
  app.add_option("--max-body-bytes", max_body_bytes,
                 "Largest HTTP request body; larger ones get 413")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<size_t>(1));
  app.add_option("--http-io-threads", http_transport.io_threads,
                 "HTTP I/O threads (every connection is a coroutine on one of them)")
      ->capture_default_str()
      ->check(moe::cli::Between<int>(1, 256));
  app.add_option("--http-workers", http_transport.worker_threads,
                 "HTTP worker threads: parse, tokenize and submit POST requests")
      ->capture_default_str()
      ->check(moe::cli::Between<int>(1, 256));
  app.add_option("--http-idle-timeout", http_idle_timeout,
                 "Seconds a keep-alive HTTP connection may wait for its next request")
      ->capture_default_str()
      ->check(moe::cli::Between<double>(0.001, 86400.0));
  app.add_option("--http-header-timeout", http_header_timeout,
                 "Seconds a whole HTTP request head may take, from its first byte")
      ->capture_default_str()
      ->check(moe::cli::Between<double>(0.001, 3600.0));
  app.add_option("--http-body-timeout", http_body_timeout,
                 "Seconds a whole HTTP request body may take, after the head")
      ->capture_default_str()
      ->check(moe::cli::Between<double>(0.001, 3600.0));
  app.add_option("--http-write-timeout", http_write_timeout,
                 "Seconds one HTTP write may take (a client that stops reading its stream "
                 "is dropped and its request aborted)")
      ->capture_default_str()
      ->check(moe::cli::Between<double>(0.001, 3600.0));
  app.add_option("--max-batched-tokens", engine_options.max_batched_tokens,
                 "Token budget of one engine step")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  app.add_option("--max-seqs", engine_options.max_seqs, "Running sequences at most")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  app.add_option("--kv-cache-bytes", engine_options.kv_cache_bytes, "KV cache pool size in bytes")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int64_t>(1));
  app.add_option("--max-queued", engine_options.max_queued,
                 "Waiting requests at most; more are refused with RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  app.add_option("--max-prompt-tokens", engine_options.max_prompt_tokens,
                 "Longest prompt accepted; 0: the model's context")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(0));
  app.add_option("--max-tokens", engine_options.max_tokens,
                 "Largest max_tokens a request may ask for; 0: the model's context")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(0));
  app.add_option("--default-max-tokens", engine_options.default_max_tokens,
                 "max_tokens of a completion request that sets none")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  app.add_option("--drain-seconds", drain_seconds,
                 "On SIGTERM, how long running requests may take to finish")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<double>(0.0));
  std::vector<std::string> api_keys, api_key_files;
  app.add_option("--api-key", api_keys,
                 "Require 'Authorization: Bearer KEY' (HTTP header or gRPC metadata) with this "
                 "key; several allowed. /health, /ready, /metrics and gRPC health stay open. "
                 "A key here shows in the process list: prefer --api-key-file");
  app.add_option("--api-key-file", api_key_files,
                 "A file of API keys, one per line ('#' comments); several allowed")
      ->check(CLI::ExistingFile);
  std::string tls_cert, tls_key;
  app.add_option("--tls-cert", tls_cert,
                 "PEM certificate (chain): serve gRPC and HTTP over TLS (with --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  if (tls_cert.empty() != tls_key.empty()) {
    std::cerr << "moe-server: --tls-cert and --tls-key go together\n";
    return 1;
  }
  std::string tls_cert_pem, tls_key_pem;
  if (!tls_cert.empty()) {
    auto slurp = [](const std::string& path, std::string* out) {
      std::ifstream in(path, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      *out = text.str();
      return static_cast<bool>(in) && !out->empty();
    };
    if (!slurp(tls_cert, &tls_cert_pem) || !slurp(tls_key, &tls_key_pem) ||
        tls_cert_pem.find("-----BEGIN") == std::string::npos ||
        tls_key_pem.find("-----BEGIN") == std::string::npos) {
      std::cerr << "moe-server: --tls-cert and --tls-key must be readable PEM files\n";
      return 1;
    }
  }

  // Every HTTP connection is a descriptor: take the hard limit, not the soft default
  // (often 1024), so that thousands of idle keep-alive clients fit.
  if (rlimit files; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  std::signal(SIGPIPE, SIG_IGN);  // a peer that went away is an error value, not a signal
  if (!InstallSignalHandlers()) {
    std::cerr << "moe-server: cannot install the SIGTERM/SIGINT handlers\n";
    return 1;
  }
  absl::StatusOr<moe::server::ApiKeys> keys = moe::server::ApiKeys::Load(api_keys, api_key_files);
  if (!keys.ok()) {
    std::cerr << "moe-server: " << keys.status().message() << "\n";
    return 1;
  }
  auto shared_keys = std::make_shared<const moe::server::ApiKeys>(*std::move(keys));
  // A port in use fails now, not after minutes of loading (and both servers bind again,
  // with the same check, once the model is in).
  for (absl::Status can_listen :
       {moe::server::CheckCanListen("gRPC", host, grpc_port),
        http_port >= 0 ? moe::server::CheckCanListen("HTTP", host, http_port) : absl::OkStatus()}) {
    if (!can_listen.ok()) {
      std::cerr << "moe-server: " << can_listen.message() << "\n";
      return 1;
    }
  }
  absl::StatusOr<moe::LoadedModel> loaded = moe::server::LoadModelFromFlags(model_flags);
  if (!loaded.ok()) {
    std::cerr << "moe-server: " << loaded.status().message() << "\n";
    return 1;
  }
  std::cerr << "moe-server: loaded " << loaded->dir << ": " << moe::LoadSummary(*loaded) << "\n";
  for (const std::string& warning : loaded->config.warnings) {
    std::cerr << "moe-server: warning: " << warning << "\n";
  }
  const moe::WeightStats weights = loaded->model->weights().stats();
  auto metrics = std::make_shared<moe::server::Metrics>();
  metrics->SetWeightBytes(weights.resident_bytes, weights.streamed_bytes);
  metrics->SetBackendInfo(loaded->model->backend().name(), loaded->model->backend().kernel_path(),
                          moe::kernels::DTypeName(weights.dtype));
  engine_options.observer = metrics;
  absl::StatusOr<std::unique_ptr<moe::ServingEngine>> engine =
      moe::ServingEngine::Create(*std::move(loaded), engine_options);
  if (!engine.ok()) {
    std::cerr << "moe-server: " << engine.status().message() << "\n";
    return 1;
  }
  // Peak memory once the weights are in and the KV pool is allocated, against what it
  // must hold: the checkpoint's tensors and the pool.
  const int64_t rss = moe::PeakRssBytes();
  metrics->SetPeakRss(rss);
  std::cerr << absl::StrFormat(
      "moe-server: peak RSS %.1f MiB = %.3fx (checkpoint tensors %.1f MiB + KV pool %.1f MiB)\n",
      rss / 1048576.0,
      static_cast<double>(rss) / (weights.checkpoint_bytes + engine_options.kv_cache_bytes),
      weights.checkpoint_bytes / 1048576.0, engine_options.kv_cache_bytes / 1048576.0);

  moe::server::GrpcServerOptions grpc_options;
  grpc_options.host = host;
  grpc_options.port = grpc_port;
  grpc_options.api_keys = shared_keys;
  grpc_options.tls_cert_pem = tls_cert_pem;
  grpc_options.tls_key_pem = tls_key_pem;
  absl::StatusOr<std::unique_ptr<moe::server::GrpcServer>> grpc_server =
      moe::server::GrpcServer::Start(engine->get(), grpc_options);
  if (!grpc_server.ok()) {
    std::cerr << "moe-server: " << grpc_server.status().message() << "\n";
    return 1;
  }
  std::unique_ptr<moe::server::Frontend> http;
  if (http_port >= 0) {
    moe::server::HttpOptions http_options;
    http_options.served_model_names = served_model_names;
    http_options.api_keys = shared_keys;
    auto seconds_ms = [](double s) {
      return std::chrono::milliseconds(static_cast<int64_t>(std::llround(s * 1000)));
    };
    http_transport.max_body_bytes = max_body_bytes;
    http_transport.idle_timeout = seconds_ms(http_idle_timeout);
    http_transport.header_timeout = seconds_ms(http_header_timeout);
    http_transport.body_timeout = seconds_ms(http_body_timeout);
    http_transport.write_timeout = seconds_ms(http_write_timeout);
    http_transport.tls_cert_pem = tls_cert_pem;
    http_transport.tls_key_pem = tls_key_pem;
    moe::ServingEngine* engine_ptr = engine->get();
    http_options.metrics_text = [metrics, engine_ptr] {
      return metrics->Scrape(engine_ptr->Status());
    };
    absl::StatusOr<std::unique_ptr<moe::server::Frontend>> started = moe::server::StartHttpFrontend(
        {engine_ptr, host, http_port}, std::move(http_options), http_transport);
    if (!started.ok()) {
      std::cerr << "moe-server: " << started.status().message() << "\n";
      return 1;
    }
    http = *std::move(started);
  }
  if (shared_keys->enabled()) {
    std::cerr << "moe-server: API keys required (" << shared_keys->size()
              << " accepted); /health, /ready, /metrics and gRPC health stay open\n";
  }
  if (!tls_cert.empty())
    std::cerr << "moe-server: TLS on both ports, certificate " << tls_cert << "\n";
  // Announced once both listen: a port that fails leaves nothing announced.
  std::cout << "moe-server: grpc listening on "
            << moe::server::HostPort(host, (*grpc_server)->port()) << std::endl;
  if (http) {
    std::cout << "moe-server: http listening on " << moe::server::HostPort(host, http->port())
              << std::endl;
  }

  const int signo = WaitForSignal(milliseconds(-1));
  std::cerr << "moe-server: signal " << signo << ", draining (grace " << drain_seconds << " s)\n";
  (*engine)->Drain();
  (*grpc_server)->SetServing(false);
  if (http) http->SetServing(false);

  // Wait for the live requests; a second signal cuts the grace period short.
  const auto grace_end = std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(drain_seconds));
  bool idle = false;
  while (!(idle = (*engine)->WaitIdle(milliseconds(50)))) {
    if (std::chrono::steady_clock::now() >= grace_end) break;
    if (WaitForSignal(milliseconds(0)) != 0) {
      std::cerr << "moe-server: second signal, not waiting any longer\n";
      break;
    }
  }
  const moe::ServingStatus status = (*engine)->Status();
  if (!idle) {
    std::cerr << "moe-server: aborting " << status.running + status.waiting
              << " requests still live\n";
  }
  // The last messages of finished streams are flushed within this grace; calls left
  // (e.g. requests still running) are cancelled.
  (*grpc_server)->Shutdown(milliseconds(idle ? 2000 : 0));
  if (http) http->Shutdown(milliseconds(idle ? 2000 : 0));
  grpc_server->reset();
  http.reset();
  engine->reset();  // ends any request still live with kAbort
  std::cerr << "moe-server: stopped\n";
  return 0;
}
