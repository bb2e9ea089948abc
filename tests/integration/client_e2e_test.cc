// The real moe-client binary against the real moe-server on loopback: `bench` over gRPC and
// over HTTP accounts for every request, and its token counts agree with the server's own
// /metrics; `generate --json` returns text and usage; a sweep draws a PNG with gnuplot.
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/server_process.h"

namespace moe::testing {
namespace {

using json = nlohmann::json;

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout only
};

// Runs `args` through the shell with a hard time limit (coreutils timeout), stdout captured.
CommandResult RunCommand(const std::string& args) {
  CommandResult result;
  FILE* pipe = popen(("timeout 120 " + args).c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid())))
      .string();
}

// The sum of every sample of `metric` (all label sets) in a Prometheus text scrape.
double SumMetric(const std::string& text, const std::string& metric) {
  double sum = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.rfind(metric, 0) != 0) continue;
    const char next = line.size() > metric.size() ? line[metric.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

class ClientE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(MOE_SERVER_BINARY);
    ASSERT_NE(server_, nullptr);
  }

  std::string HttpUrl() const { return "http://127.0.0.1:" + std::to_string(server_->http_port()); }

  std::string Metrics() {
    httplib::Client client("127.0.0.1", server_->http_port());
    client.set_read_timeout(10, 0);
    auto res = client.Get("/metrics");
    if (!res || res->status != 200) return "";
    return res->body;
  }

  // Runs the standard bench (24 requests, 4 workers, 8 tokens each) with `endpoint_flags`
  // and checks the result file and the server's counters.
  void BenchAndCheck(const std::string& endpoint_flags, const std::string& name) {
    const std::string output = TempPath(name + ".json");
    const CommandResult run = RunCommand(
        std::string(MOE_CLIENT_BINARY) + " bench " + endpoint_flags +
        " --num-requests 24 --concurrency 4 --warmup 0 --ignore-eos --output-len 8 --input-len 16"
        " --output " +
        output);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_THAT(run.output, ::testing::HasSubstr("Successful requests"));

    std::ifstream in(output);
    ASSERT_TRUE(in) << output;
    const json result = json::parse(in);
    const json& summary = result["summary"];
    EXPECT_EQ(summary["completed"], 24);
    EXPECT_EQ(summary["failed"], 0);
    ASSERT_EQ(result["records"].size(), 24u);
    int64_t output_tokens = 0;
    std::vector<bool> seen(24, false);
    for (const json& r : result["records"]) {
      EXPECT_EQ(r["error"], "");
      EXPECT_EQ(r["output_tokens"], 8);
      EXPECT_GT(r["prompt_tokens"].get<int>(), 0);
      EXPECT_FALSE(r["first_token"].is_null());
      EXPECT_LE(r["start"].get<double>(), r["first_token"].get<double>());
      EXPECT_LE(r["first_token"].get<double>(), r["end"].get<double>());
      EXPECT_GE(r["token_times"].size(), 1u);
      const int index = r["index"];
      ASSERT_TRUE(index >= 0 && index < 24);
      EXPECT_FALSE(seen[index]) << "index " << index << " twice";
      seen[index] = true;
      output_tokens += r["output_tokens"].get<int64_t>();
    }
    EXPECT_EQ(output_tokens, 24 * 8);
    EXPECT_EQ(summary["output_tokens"], 24 * 8);
    EXPECT_LE(summary["peak_concurrency"].get<int>(), 4);
    EXPECT_EQ(result["model_info"]["model_name"], "default");
    EXPECT_FALSE(result["machine"]["cpu_model"].get<std::string>().empty());

    // The server counts what the client counted (the counters may trail the last
    // response by a moment).
    double generated = 0, finished = 0;
    for (int attempt = 0; attempt < 50; ++attempt) {
      const std::string text = Metrics();
      generated = SumMetric(text, "moe_generation_tokens_total");
      finished = SumMetric(text, "moe_requests_finished_total");
      if (generated == 24 * 8 && finished == 24) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(generated, 24 * 8);
    EXPECT_EQ(finished, 24);
    EXPECT_EQ(SumMetric(Metrics(), "moe_prompt_tokens_total"),
              summary["prompt_tokens"].get<double>());
    std::filesystem::remove(output);
  }

  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ClientE2eTest, BenchOverGrpcMatchesServerMetrics) {
  BenchAndCheck("--target " + server_->grpc_address(), "bench_grpc");
}

TEST_F(ClientE2eTest, BenchOverHttpMatchesServerMetrics) {
  BenchAndCheck("--url " + HttpUrl(), "bench_http");
}

TEST_F(ClientE2eTest, GenerateJsonReturnsTextAndUsage) {
  for (const std::string& endpoint :
       {"--target " + server_->grpc_address(), "--url " + HttpUrl()}) {
    const CommandResult run =
        RunCommand(std::string(MOE_CLIENT_BINARY) + " generate " + endpoint +
                   " --prompt 'Hello there' --max-tokens 6 --ignore-eos --temperature 0 --json");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const json out = json::parse(run.output);
    EXPECT_FALSE(out["text"].get<std::string>().empty()) << run.output;
    EXPECT_EQ(out["usage"]["completion_tokens"], 6);
    EXPECT_GT(out["usage"]["prompt_tokens"].get<int>(), 0);
    EXPECT_FALSE(out["ttft_seconds"].is_null());
    EXPECT_FALSE(out.contains("error"));
  }
}

// The moe-serve extensions from the client: the same SCMoE + routing text over gRPC and
// HTTP, different from plain greedy; a bench run of pairs; a bad value fails in words.
TEST_F(ClientE2eTest, SelfContrastAndRoutingFlagsReachTheServerOnBothTransports) {
  const std::string base =
      " --prompt 'Hello there' --max-tokens 12 --ignore-eos --temperature 0 "
      "--json";
  const std::string scmoe =
      " --self-contrast --scmoe-beta 0.9 --scmoe-weak-rank 3 "
      "--routing-top-k 3";
  std::vector<std::string> texts;
  for (const std::string& endpoint :
       {"--target " + server_->grpc_address(), "--url " + HttpUrl()}) {
    const CommandResult run =
        RunCommand(std::string(MOE_CLIENT_BINARY) + " generate " + endpoint + base + scmoe);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    texts.push_back(json::parse(run.output)["text"].get<std::string>());
  }
  EXPECT_EQ(texts[0], texts[1]);
  const CommandResult plain =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " generate --url " + HttpUrl() + base);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(json::parse(plain.output)["text"].get<std::string>(), texts[0]);

  const CommandResult bench =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " bench --url " + HttpUrl() +
                 " --num-requests 4 --warmup 0 --concurrency 2 --input-len 16 "
                 "--output-len 4 --self-contrast --routing-top-p 0.5");
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  // Two generates and four bench requests were pairs.
  EXPECT_THAT(Metrics(),
              ::testing::HasSubstr("moe_requests_with_option_total{option=\"self_contrast\"} 6"));

  const CommandResult bad =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " generate --target " + server_->grpc_address() +
                 " --prompt hi --self-contrast --scmoe-weak-rank 99 2>&1");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_THAT(bad.output, ::testing::HasSubstr("self_contrast.weak_rank")) << bad.output;
  const CommandResult both =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " generate --url " + HttpUrl() +
                 " --prompt hi --routing-top-k 2 --routing-top-p 0.5 2>&1");
  EXPECT_NE(both.exit_code, 0) << both.output;  // the flags exclude each other
}

TEST_F(ClientE2eTest, ErrorsAreCountedByKind) {
  // Prompts longer than the model's context: every request is refused, the run still ends.
  const std::string output = TempPath("bench_errors.json");
  const CommandResult run =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " bench --url " + HttpUrl() +
                 " --num-requests 3 --concurrency 2 --input-len 5000"
                 " --output-len 4 --output " +
                 output);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  std::ifstream in(output);
  ASSERT_TRUE(in) << output;
  const json result = json::parse(in);
  EXPECT_EQ(result["summary"]["failed"], 3);
  EXPECT_EQ(result["summary"]["errors_by_kind"]["http_400"], 3) << result["summary"].dump();
  std::filesystem::remove(output);
}

TEST_F(ClientE2eTest, AnUnreachableServerFailsAtOnceInWordsAndAFailureShowsNoZeroUsage) {
  // A port nothing listens on: the server's own gRPC port once it has stopped.
  const std::string dead = server_->grpc_address();
  const std::string url = HttpUrl();
  ASSERT_EQ(server_->Stop(std::chrono::seconds(20)), 0);
  for (const std::string& endpoint : {"--target " + dead, "--url " + url}) {
    const auto start = std::chrono::steady_clock::now();
    const CommandResult run = RunCommand(std::string(MOE_CLIENT_BINARY) + " generate " + endpoint +
                                         " --prompt hi --max-tokens 4 2>&1");
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_THAT(run.output, ::testing::HasSubstr("connection refused")) << run.output;
    EXPECT_THAT(run.output, ::testing::Not(::testing::HasSubstr("usage:")));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    const CommandResult bench = RunCommand(std::string(MOE_CLIENT_BINARY) + " bench " + endpoint +
                                           " --num-requests 3 2>&1");
    EXPECT_EQ(bench.exit_code, 2) << bench.output;
    EXPECT_THAT(bench.output, ::testing::HasSubstr("connection refused")) << bench.output;
  }
}

TEST_F(ClientE2eTest, AGenerateThatFailsPrintsTheErrorAndNoUsage) {
  // A prompt longer than the context: the server refuses it.
  for (const bool as_json : {false, true}) {
    const CommandResult run =
        RunCommand(std::string(MOE_CLIENT_BINARY) + " generate --url " + HttpUrl() + " --prompt '" +
                   std::string(3000, 'a') + std::string(" b") + "' --max-tokens 4" +
                   (as_json ? " --json" : "") + " 2>&1");
    EXPECT_EQ(run.exit_code, 1) << run.output.substr(0, 500);
    if (as_json) {
      const json out = json::parse(run.output.substr(run.output.find('{')));
      EXPECT_TRUE(out["usage"].is_null()) << out.dump();
      EXPECT_TRUE(out.contains("error"));
    } else {
      EXPECT_THAT(run.output, ::testing::HasSubstr("error: http_400"));
      EXPECT_THAT(run.output, ::testing::Not(::testing::HasSubstr("usage:")));
    }
  }
}

TEST_F(ClientE2eTest, APlotOrOutputThatCannotBeWrittenFailsBeforeTheSweep) {
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& flag : {std::string(" --output /nonexistent/dir/out.json"),
                                  std::string(" --sweep 1,2 --plot /nonexistent/dir/p.png")}) {
    const CommandResult run =
        RunCommand(std::string(MOE_CLIENT_BINARY) + " bench --target " + server_->grpc_address() +
                   " --num-requests 50 --output-len 64" + flag + " 2>&1");
    EXPECT_EQ(run.exit_code, 2) << run.output;
    // (Without gnuplot the --plot case stops earlier, at the gnuplot check.)
    EXPECT_TRUE(run.output.find("is not a writable directory") != std::string::npos ||
                run.output.find("gnuplot") != std::string::npos)
        << run.output;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(ClientE2eTest, SweepWritesTableAndPlot) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "gnuplot is not installed (apt-get install gnuplot-nox)";
  }
  const std::string png = TempPath("sweep.png");
  const std::string output = TempPath("sweep.json");
  const CommandResult run =
      RunCommand(std::string(MOE_CLIENT_BINARY) + " bench --target " + server_->grpc_address() +
                 " --sweep 1,2 --num-requests 6 --ignore-eos --output-len 4 --input-len 8"
                 " --plot " +
                 png + " --output " + output);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, ::testing::HasSubstr("TTFT p50 ms"));
  ASSERT_TRUE(std::filesystem::exists(png));
  EXPECT_GT(std::filesystem::file_size(png), 1000u);
  std::ifstream in(output);
  const json result = json::parse(in);
  ASSERT_EQ(result["sweep"].size(), 2u);
  EXPECT_EQ(result["sweep"][1]["concurrency"], 2);
  EXPECT_EQ(result["sweep"][1]["summary"]["completed"], 6);
  std::filesystem::remove(png);
  std::filesystem::remove(output);
}

}  // namespace
}  // namespace moe::testing
