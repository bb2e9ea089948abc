// Serving throughput over gRPC at several concurrencies (closed loop): each of C client
// threads sends its next Generate as soon as the previous one finished. Output tokens/s
// of a level is all tokens generated over the level's wall time; the ratio to
// concurrency 1 is what continuous batching buys. Greedy with ignore_eos, so every
// request generates exactly --max-tokens tokens.
//
// With --metrics-url (the server's /metrics), each level also gets its roofline: the
// server's own counts of the bytes its steps read (weights touched, every expert with
// rows once per step, plus KV) and of their FLOPs, over the level, against the machine's
// bounds measured by this process in the same run: the sustained read bandwidth (right
// before and after the level, the larger) and the large-GEMM rate of --dtype. Roofline
// time = max(bytes / bandwidth, FLOPs / GEMM rate); roofline tok/s = the level's output
// tokens over it. A server on a GPU takes the device's bounds instead (--bound-bandwidth,
// --bound-gemm: moe_gpu_bench's figures from the same scripts/gpu_check.sh run).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bounds.h"
#include "moe/v1/serving.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct RequestRecord {
  int tokens = 0;
  double ttft = 0;
  double e2e = 0;
  bool ok = false;
};

std::string PromptFor(int i) {
  static const char* kWords[] = {"And",    "the", "LORD", "said", "unto", "Moses", "king", "of",
                                 "Israel", "in",  "that", "day",  "when", "he",    "came", "forth"};
  std::string p;
  for (int w = 0; w < 4 + i % 5; ++w) p += std::string(w ? " " : "") + kWords[(i * 7 + w * 3) % 16];
  return p;
}

// How each request samples: greedy by default.
struct Sampling {
  float temperature = 0.f;
  float top_p = 1.f;
  int top_k = 0;
};

RequestRecord RunOne(moe::v1::Serving::Stub& stub, int index, int max_tokens,
                     const Sampling& sampling) {
  RequestRecord r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  moe::v1::GenerateRequest req;
  req.set_text(PromptFor(index));
  req.set_max_tokens(max_tokens);
  req.set_temperature(sampling.temperature);
  if (sampling.top_p < 1.f) req.set_top_p(sampling.top_p);
  if (sampling.top_k > 0) req.set_top_k(sampling.top_k);
  req.set_seed(static_cast<uint64_t>(index) + 1);
  req.set_ignore_eos(true);
  const Clock::time_point start = Clock::now();
  auto reader = stub.Generate(&ctx, req);
  moe::v1::GenerateResponse resp;
  bool first = true;
  while (reader->Read(&resp)) {
    if (first && resp.token_ids_size() > 0) {
      r.ttft = std::chrono::duration<double>(Clock::now() - start).count();
      first = false;
    }
    r.tokens += resp.token_ids_size();
  }
  r.ok = reader->Finish().ok();
  r.e2e = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// The server's counters that a roofline needs, from one /metrics scrape.
struct Counters {
  double weight_bytes = 0, kv_bytes = 0, flops = 0, step_seconds = 0, steps = 0;
  bool ok = false;
};

Counters Scrape(const std::string& url) {
  Counters c;
  if (url.empty()) return c;
  httplib::Client client(url);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return c;
  auto value = [&](const std::string& name) {
    const size_t at = res->body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(res->body.substr(at + name.size() + 2));
  };
  c.weight_bytes = value("moe_step_weight_bytes_total");
  c.kv_bytes = value("moe_step_kv_bytes_total");
  c.flops = value("moe_step_flops_total");
  c.step_seconds = value("moe_step_duration_seconds_sum");
  c.steps = value("moe_step_duration_seconds_count");
  c.ok = c.weight_bytes >= 0 && c.flops >= 0 && c.step_seconds >= 0;
  return c;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"serving_bench: moe-server output tokens/s against concurrency, over gRPC"};
  std::string target;
  std::vector<int> levels = {1, 8, 32, 64};
  int requests_per_stream = 4;
  int max_tokens = 64;
  std::string output, metrics_url, dtype = "bfloat16";
  app.add_option("--target", target, "moe-server gRPC address HOST:PORT")->required();
  app.add_option("--metrics-url", metrics_url,
                 "The server's HTTP address (http://HOST:PORT) for its /metrics: adds rooflines");
  app.add_option("--dtype", dtype, "The served weights' dtype, for the GEMM rate bound")
      ->capture_default_str();
  app.add_option("--concurrency", levels, "Concurrency levels")->delimiter(',');
  app.add_option("--requests-per-stream", requests_per_stream,
                 "Requests each concurrent stream sends per level")
      ->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "Tokens generated per request")->capture_default_str();
  app.add_option("--output", output, "Write the results as JSON to this file");
  double bound_bandwidth_gbps = 0, bound_gemm_gflops = 0;
  app.add_option("--bound-bandwidth", bound_bandwidth_gbps,
                 "A server on a GPU: its bandwidth bound in GB/s, measured beside this run "
                 "(moe_gpu_bench), instead of this machine's read bandwidth");
  app.add_option("--bound-gemm", bound_gemm_gflops,
                 "A server on a GPU: its GEMM rate in GFLOP/s, measured beside this run");
  Sampling sampling;
  app.add_option("--temperature", sampling.temperature, "Sampling temperature; 0: greedy")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", sampling.top_p, "Nucleus sampling mass, in (0, 1]")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 1.0));
  app.add_option("--top-k", sampling.top_k, "Top-k filter; 0: none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "serving_bench: cannot connect to %s\n", target.c_str());
    return 1;
  }
  auto stub = moe::v1::Serving::NewStub(channel);
  // Warm-up, not counted.
  for (int i = 0; i < 2; ++i) RunOne(*stub, i, max_tokens, sampling);

  const bool roofline = !metrics_url.empty();
  const moe::kernels::DType gemm_dtype =
      dtype == "float32" ? moe::kernels::DType::kF32 : moe::kernels::DType::kBF16;
  // A server on a GPU is bounded by the device, whose bounds are given (measured beside
  // this run); a CPU server by this machine's, measured here.
  const bool given = bound_bandwidth_gbps > 0 && bound_gemm_gflops > 0;
  auto read_bandwidth = [&] {
    return given ? moe::bench::Bandwidth{bound_bandwidth_gbps * 1e9, bound_bandwidth_gbps * 1e9}
                 : moe::bench::ReadBandwidth();
  };
  const double gemm_rate = !roofline ? 0
                           : given   ? bound_gemm_gflops * 1e9
                                     : moe::bench::GemmRate(gemm_dtype);
  moe::bench::Bandwidth bw_before = roofline ? read_bandwidth() : moe::bench::Bandwidth{};
  if (roofline) {
    std::printf("machine: %s; GEMM (%s, %s) %.1f GFLOP/s\n",
                given ? "the device's given bounds" : moe::bench::MachineDescription().c_str(),
                dtype.c_str(), given ? "given" : "2048^3", gemm_rate / 1e9);
  }
  nlohmann::json results = nlohmann::json::array();
  double base = 0;
  std::printf("%-11s %9s %8s %14s %10s %10s %10s", "concurrency", "requests", "errors",
              "output tok/s", "ratio", "ttft p50", "e2e p50");
  if (roofline) {
    std::printf(" %9s %9s %9s %13s %8s %9s", "MB/step", "GF/step", "BW GB/s", "roofline tok/s",
                "of roof", "busy");
  }
  std::printf("\n");
  for (int c : levels) {
    const Counters before = Scrape(metrics_url);
    std::vector<RequestRecord> records(static_cast<size_t>(c) * requests_per_stream);
    std::atomic<int> next{0};
    const Clock::time_point start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < c; ++t) {
      threads.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < static_cast<int>(records.size());) {
          records[i] = RunOne(*stub, i, max_tokens, sampling);
        }
      });
    }
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - start).count();
    int tokens = 0, errors = 0;
    std::vector<double> ttft, e2e;
    for (const RequestRecord& r : records) {
      tokens += r.tokens;
      errors += !r.ok;
      ttft.push_back(r.ttft);
      e2e.push_back(r.e2e);
    }
    const double tps = tokens / wall;
    if (c == levels.front()) base = tps;
    std::printf("%-11d %9zu %8d %14.1f %9.2fx %9.3fs %9.3fs", c, records.size(), errors, tps,
                base > 0 ? tps / base : 0.0, Percentile(ttft, 0.5), Percentile(e2e, 0.5));
    nlohmann::json roof;
    if (roofline) {
      const Counters after = Scrape(metrics_url);
      const moe::bench::Bandwidth bw_after = read_bandwidth();
      const double bandwidth = std::max(bw_before.sustained, bw_after.sustained);
      bw_before = bw_after;
      const double bytes =
          (after.weight_bytes - before.weight_bytes) + (after.kv_bytes - before.kv_bytes);
      const double flops = after.flops - before.flops;
      const double steps = after.steps - before.steps;
      const double busy = (after.step_seconds - before.step_seconds) / wall;
      const double roof_seconds = std::max(bytes / bandwidth, flops / gemm_rate);
      const double roof_tps = tokens / roof_seconds;
      std::printf(" %9.1f %9.2f %9.1f %13.1f %7.1f%% %8.1f%%", bytes / steps / 1e6,
                  flops / steps / 1e9, bandwidth / 1e9, roof_tps, 100 * tps / roof_tps, 100 * busy);
      roof = {{"steps", steps},
              {"bytes", bytes},
              {"flops", flops},
              {"read_bandwidth_sustained", bandwidth},
              {"gemm_flops_per_second", gemm_rate},
              {"roofline_seconds", roof_seconds},
              {"roofline_tokens_per_second", roof_tps},
              {"fraction_of_roofline", tps / roof_tps},
              {"engine_busy_fraction", busy}};
    }
    std::printf("\n");
    results.push_back({{"concurrency", c},
                       {"requests", records.size()},
                       {"errors", errors},
                       {"output_tokens", tokens},
                       {"wall_seconds", wall},
                       {"output_tokens_per_second", tps},
                       {"ratio_to_first_level", base > 0 ? tps / base : 0.0},
                       {"ttft_p50_seconds", Percentile(ttft, 0.5)},
                       {"ttft_p99_seconds", Percentile(ttft, 0.99)},
                       {"e2e_p50_seconds", Percentile(e2e, 0.5)},
                       {"roofline", roof}});
  }
  if (!output.empty()) {
    std::ofstream(output) << nlohmann::json{{"target", target},
                                            {"machine", moe::bench::MachineDescription()},
                                            {"max_tokens", max_tokens},
                                            {"temperature", sampling.temperature},
                                            {"top_p", sampling.top_p},
                                            {"top_k", sampling.top_k},
                                            {"requests_per_stream", requests_per_stream},
                                            {"levels", results}}
                                 .dump(2)
                          << "\n";
  }
  return 0;
}
