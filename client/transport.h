// How moe-client talks to a server: one streaming request at a time per call, every
// token chunk timestamped. GrpcTransport speaks moe.v1.Serving/Generate;
// OpenAiHttpTransport speaks the OpenAI completions API with server-sent events, so the
// same load test runs against any OpenAI-compatible server. A transport connects only to
// the address it was given.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "client/prompts.h"
#include "client/records.h"
#include "nlohmann/json.hpp"

namespace moe::client {

using Clock = std::chrono::steady_clock;

// moe-serve's request extensions (docs/serving.md, "SCMoE and per-request routing"):
// unset fields are not sent.
struct Extensions {
  std::optional<int> routing_top_k;
  std::optional<float> routing_top_p;
  bool self_contrast = false;  // SCMoE; the four below only refine it
  std::optional<float> alpha, beta;
  std::optional<int> weak_rank;
  bool ban_eos = false;
};

// Sampling and streaming options of one request; unset fields take the server's default.
struct GenerateOptions {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  Extensions extensions;
  bool stream = true;  // false: one response at the end (TTFT is then the e2e latency)
  // The whole request (connect to last byte) must finish within this; else "timeout".
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Sends one request and blocks until it ends. Times in the record are seconds since
  // `origin`; `on_text` receives every text delta as it arrives. Failures are reported in
  // the record's `error` / `error_message`, never thrown. Thread-safe: a load test calls
  // Run from many threads at once.
  virtual RequestRecord Run(const PromptSpec& prompt, const GenerateOptions& options,
                            Clock::time_point origin,
                            std::function<void(std::string_view text)> on_text = {}) = 0;

  // What the server says about its model (GetModelInfo over gRPC, GET /v1/models over
  // HTTP), as a JSON object for the result file.
  virtual absl::StatusOr<nlohmann::json> GetModelInfo() = 0;

  // "grpc://HOST:PORT" or the base URL, for reports.
  virtual std::string Describe() const = 0;
};

// `target` is HOST:PORT. `channels` gRPC channels (each its own HTTP/2 connection) are
// used round-robin, so hundreds of concurrent streams do not queue on one connection.
std::unique_ptr<Transport> MakeGrpcTransport(const std::string& target, int channels = 4);

// `base_url` is http://HOST:PORT (https is not supported). `model` is sent as the request's
// "model" field; empty: the first id that GET /v1/models lists, if any.
absl::StatusOr<std::unique_ptr<Transport>> MakeOpenAiHttpTransport(const std::string& base_url,
                                                                   const std::string& model = "");

// Whether a TCP connection to `address` opens within `timeout`: OK, or Unavailable saying
// why in words ("cannot reach 127.0.0.1:1: connection refused (is the server running
// there?)"). `address` is HOST:PORT, [IPV6]:PORT or an http:// URL (port 80 by default);
// any other form (a gRPC "dns:///" or "unix:" target) is OK unprobed.
absl::Status ProbeTcp(const std::string& address, std::chrono::milliseconds timeout);

// Error kind of a gRPC status code: "grpc_RESOURCE_EXHAUSTED", ... ("timeout" for
// DEADLINE_EXCEEDED).
std::string GrpcErrorKind(int code);

}  // namespace moe::client
