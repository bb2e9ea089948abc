// Serving throughput over gRPC at several concurrencies (closed loop): each of C client
// threads sends its next Generate as soon as the previous one finished. Output tokens/s
// of a level is all tokens generated over the level's wall time; the ratio to
// concurrency 1 is what continuous batching buys. Greedy with ignore_eos, so every
// request generates exactly --max-tokens tokens.
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

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

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

RequestRecord RunOne(moe::v1::Serving::Stub& stub, int index, int max_tokens) {
  RequestRecord r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  moe::v1::GenerateRequest req;
  req.set_text(PromptFor(index));
  req.set_max_tokens(max_tokens);
  req.set_temperature(0.f);
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
  std::string output;
  app.add_option("--target", target, "moe-server gRPC address HOST:PORT")->required();
  app.add_option("--concurrency", levels, "Concurrency levels")->delimiter(',');
  app.add_option("--requests-per-stream", requests_per_stream,
                 "Requests each concurrent stream sends per level")
      ->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "Tokens generated per request")->capture_default_str();
  app.add_option("--output", output, "Write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "serving_bench: cannot connect to %s\n", target.c_str());
    return 1;
  }
  auto stub = moe::v1::Serving::NewStub(channel);
  // Warm-up, not counted.
  for (int i = 0; i < 2; ++i) RunOne(*stub, i, max_tokens);

  nlohmann::json results = nlohmann::json::array();
  double base = 0;
  std::printf("%-11s %9s %8s %14s %10s %10s %10s\n", "concurrency", "requests", "errors",
              "output tok/s", "ratio", "ttft p50", "e2e p50");
  for (int c : levels) {
    std::vector<RequestRecord> records(static_cast<size_t>(c) * requests_per_stream);
    std::atomic<int> next{0};
    const Clock::time_point start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < c; ++t) {
      threads.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < static_cast<int>(records.size());) {
          records[i] = RunOne(*stub, i, max_tokens);
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
    std::printf("%-11d %9zu %8d %14.1f %9.2fx %9.3fs %9.3fs\n", c, records.size(), errors, tps,
                base > 0 ? tps / base : 0.0, Percentile(ttft, 0.5), Percentile(e2e, 0.5));
    results.push_back({{"concurrency", c},
                       {"requests", records.size()},
                       {"errors", errors},
                       {"output_tokens", tokens},
                       {"wall_seconds", wall},
                       {"output_tokens_per_second", tps},
                       {"ratio_to_first_level", base > 0 ? tps / base : 0.0},
                       {"ttft_p50_seconds", Percentile(ttft, 0.5)},
                       {"ttft_p99_seconds", Percentile(ttft, 0.99)},
                       {"e2e_p50_seconds", Percentile(e2e, 0.5)}});
  }
  if (!output.empty()) {
    std::ofstream(output) << nlohmann::json{{"target", target},
                                            {"max_tokens", max_tokens},
                                            {"requests_per_stream", requests_per_stream},
                                            {"levels", results}}
                                 .dump(2)
                          << "\n";
  }
  return 0;
}
