// The real moe-server over HTTP: an OpenAI completion, then a /metrics scrape whose
// counts match the request and which promtool accepts.
#include <httplib.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "tests/integration/server_process.h"

namespace moe::testing {
namespace {

using ::testing::HasSubstr;

// The number of parameters in a safetensors file, through the engine's safetensors reader.
// Bytes the CPU backend holds for a bf16 checkpoint served in bf16: 2 per parameter of a
// matrix, packed in panels of 16 rows (a router of 8 experts takes 16 rows), and 4 per
// parameter of a vector (norm weights stay fp32).
int64_t Bf16ServedBytes(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return -1;
  int64_t total = 0;
  for (const auto& [name, tensor] : (*file)->tensors()) {
    if (tensor.dtype != DType::kBF16) return -1;
    total += tensor.shape.size() == 1 ? 4 * tensor.numel()
                                      : 2 * ((tensor.shape[0] + 15) / 16 * 16) * tensor.shape[1];
  }
  return total;
}

// The text of an SSE completion stream: every chunk's choices[0].text, joined.
std::string JoinedSseText(const std::string& body) {
  std::string joined;
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("data: {")) continue;
    joined += nlohmann::json::parse(line.substr(6))["choices"][0]["text"].get<std::string>();
  }
  return joined;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(MOE_SERVER_BINARY);
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->http_port());
    client_->set_read_timeout(30, 0);
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, CompletionThenMetricsScrapeThatPromtoolAccepts) {
  auto ready = client_->Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);

  const nlohmann::json body = {{"model", "default"},
                               {"prompt", "And the king said unto"},
                               {"max_tokens", 12},
                               {"temperature", 0},
                               {"ignore_eos", true}};
  auto res = client_->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const nlohmann::json out = nlohmann::json::parse(res->body);
  EXPECT_EQ(out["usage"]["completion_tokens"], 12);
  EXPECT_EQ(out["choices"][0]["finish_reason"], "length");

  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  ASSERT_EQ(metrics->status, 200);
  const std::string& text = metrics->body;
  EXPECT_THAT(text, HasSubstr("moe_generation_tokens_total 12"));
  EXPECT_THAT(text, HasSubstr("moe_requests_finished_total{reason=\"length\"} 1"));
  EXPECT_THAT(text, HasSubstr("moe_prompt_tokens_total " +
                              std::to_string(out["usage"]["prompt_tokens"].get<int>())));
  EXPECT_THAT(text, HasSubstr("moe_num_requests_running 0"));
  EXPECT_THAT(text, HasSubstr("moe_kv_cache_usage_ratio 0"));
  EXPECT_THAT(text, HasSubstr("moe_time_to_first_token_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("moe_inter_token_latency_seconds_count 11"));
  EXPECT_THAT(text, HasSubstr("moe_expert_tokens_total{expert=\"0\",layer=\"0\"}"));
  EXPECT_THAT(text, HasSubstr("moe_expert_load_imbalance{layer=\"3\"}"));
  // The CPU backend holds every weight resident in the checkpoint's bf16, and nothing
  // streams through the offload ring.
  const int64_t bytes =
      Bf16ServedBytes(std::string(MOE_SOURCE_DIR) + "/models/default/model.safetensors");
  ASSERT_GT(bytes, 0);
  EXPECT_THAT(text, HasSubstr("moe_weight_bytes{placement=\"resident\"} " + std::to_string(bytes)));
  EXPECT_THAT(text,
              ::testing::ContainsRegex("moe_backend_info\\{backend=\"cpu\",kernels=\"(avx512|avx2|"
                                       "generic)\",weight_dtype=\"bfloat16\"\\} 1"));
  EXPECT_THAT(text, ::testing::ContainsRegex("moe_step_weight_bytes_total [1-9]"));
  EXPECT_THAT(text, ::testing::ContainsRegex("moe_step_flops_total [1-9]"));
  EXPECT_THAT(text, HasSubstr("moe_weight_bytes{placement=\"streamed\"} 0"));
  EXPECT_THAT(text, HasSubstr("moe_offload_bytes_total 0"));

  // promtool (Debian package prometheus) checks the exposition format and conventions.
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / ("metrics_" + std::to_string(getpid())))
          .string();
  std::ofstream(path) << text;
  const int rc = std::system(("promtool check metrics < " + path + " 2>&1").c_str());
  EXPECT_EQ(rc, 0) << "promtool check metrics failed on:\n" << text;
}

// Every metric the Grafana dashboard (deploy/grafana/moe-serve.json) queries is one that a
// live moe-server exports.
TEST_F(HttpServerTest, GrafanaDashboardQueriesOnlyExportedMetrics) {
  auto res = client_->Post("/v1/completions", R"({"prompt": "Blessed are", "max_tokens": 3})",
                           "application/json");
  ASSERT_TRUE(res && res->status == 200);
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics && metrics->status == 200);
  std::set<std::string> exported;
  std::istringstream lines(metrics->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) exported.insert(line.substr(7, line.find(' ', 7) - 7));
  }
  ASSERT_FALSE(exported.empty());

  std::ifstream file(std::string(MOE_SOURCE_DIR) + "/deploy/grafana/moe-serve.json");
  ASSERT_TRUE(file) << "deploy/grafana/moe-serve.json";
  const nlohmann::json dashboard = nlohmann::json::parse(file, nullptr, false);
  ASSERT_TRUE(dashboard.is_object()) << "the dashboard is not valid JSON";
  std::vector<std::string> exprs;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& j) {
    if (j.is_object()) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        if ((it.key() == "expr" || it.key() == "query") && it->is_string()) {
          exprs.push_back(it->get<std::string>());
        }
        walk(*it);
      }
    } else if (j.is_array()) {
      for (const auto& v : j) walk(v);
    }
  };
  walk(dashboard);
  ASSERT_GE(exprs.size(), 10u);
  const std::regex metric_name(R"(\bmoe_[a-z0-9_]+)");
  std::set<std::string> queried;
  for (const std::string& expr : exprs) {
    for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric_name);
         it != std::sregex_iterator(); ++it) {
      std::string name = it->str();
      // Histogram series are <family>_bucket, _sum and _count.
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s(suffix);
        if (name.size() > s.size() && name.ends_with(s) &&
            exported.count(name.substr(0, name.size() - s.size())) != 0) {
          name.resize(name.size() - s.size());
        }
      }
      queried.insert(name);
    }
  }
  EXPECT_GE(queried.size(), 12u);
  for (const std::string& name : queried) {
    EXPECT_TRUE(exported.count(name) != 0)
        << "the dashboard queries " << name << ", which moe-server does not export";
  }

  // Every panel query is valid PromQL: promtool parses each as a recording rule, with
  // Grafana's variables given values. A broken query must fail the same check.
  auto promql_ok = [](const std::vector<std::string>& queries, const std::string& name) {
    std::string rules = "groups:\n  - name: dashboard\n    rules:\n";
    for (size_t i = 0; i < queries.size(); ++i) {
      std::string q = std::regex_replace(queries[i], std::regex(R"(\$__rate_interval)"), "1m");
      q = std::regex_replace(q, std::regex(R"(\$job\b)"), ".+");
      // A JSON string is a YAML double-quoted scalar.
      rules += "      - record: dashboard:q" + std::to_string(i) +
               "\n        expr: " + nlohmann::json(q).dump() + "\n";
    }
    const std::string path =
        (std::filesystem::path(::testing::TempDir()) / (name + std::to_string(getpid()) + ".yml"))
            .string();
    std::ofstream(path) << rules;
    const bool ok =
        std::system(("promtool check rules " + path + " > " + path + ".log 2>&1").c_str()) == 0;
    std::ifstream log_file(path + ".log");
    std::stringstream log;
    log << log_file.rdbuf();
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".log");
    return std::make_pair(ok, log.str());
  };
  std::vector<std::string> promql;  // label_values(...) is Grafana's, for the variables
  for (const std::string& e : exprs) {
    if (e.rfind("label_values(", 0) != 0) promql.push_back(e);
  }
  EXPECT_GE(promql.size(), 20u);
  const auto [dashboard_ok, dashboard_log] = promql_ok(promql, "dashboard_rules");
  EXPECT_TRUE(dashboard_ok) << "a dashboard query is not valid PromQL:\n" << dashboard_log;
  const auto [broken_ok, broken_log] =
      promql_ok({"sum(rate(moe_generation_tokens_total[1m])"}, "broken_rule");
  EXPECT_FALSE(broken_ok) << "promtool accepted an unbalanced parenthesis:\n" << broken_log;
  EXPECT_THAT(broken_log, HasSubstr("parse error"));
}

// The same checks as tests/server/http_service_test.cc runs in-process, here through the
// real binary's HTTP port: bad input gets its OpenAI error status and body, the server
// keeps serving, and a stream ends with [DONE].
TEST_F(HttpServerTest, BadInputOverTheRealServerAndStreaming) {
  struct Case {
    std::string body;
    int status;
  };
  const std::vector<Case> cases = {
      {R"({"prompt": "hi", )", 400},                           // malformed JSON
      {R"({"prompt": ""})", 400},                              // empty prompt
      {R"({"prompt": "hi", "top_p": 1.5})", 400},              // bad field
      {R"({"prompt": [1, 99999]})", 400},                      // id outside the vocabulary
      {R"({"prompt": "hi", "max_tokens": 100000})", 400},      // past the context
      {R"({"model": "no-such-model", "prompt": "hi"})", 404},  // unknown model
      {nlohmann::json{{"prompt", std::string(2 << 20, 'a')}}.dump(), 413},  // over 1 MiB
  };
  for (const Case& c : cases) {
    auto res = client_->Post("/v1/completions", c.body, "application/json");
    ASSERT_TRUE(res) << c.body.substr(0, 80);
    EXPECT_EQ(res->status, c.status) << c.body.substr(0, 80) << " -> " << res->body;
    const auto error = nlohmann::json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.is_object() && error.contains("error")) << res->body;
    auto ok = client_->Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 2})",
                            "application/json");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << "after " << c.body.substr(0, 80);
  }
  auto stream = client_->Post("/v1/completions",
                              R"({"prompt": "In the beginning", "max_tokens": 6, "stream": true,
                                  "stream_options": {"include_usage": true}})",
                              "application/json");
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  EXPECT_THAT(stream->body, HasSubstr("\"usage\""));
  EXPECT_TRUE(stream->body.ends_with("data: [DONE]\n\n")) << stream->body;
}

// The "routing" extension over HTTP on both endpoints: served and streamed with the same
// text, refused with its field when out of range, cancelled by a client that hangs up,
// and counted in /metrics (requests with the option, experts per token).
TEST_F(HttpServerTest, RoutingIsServedStreamedRefusedAndCounted) {
  auto post = [&](const nlohmann::json& body, const std::string& path = "/v1/completions") {
    auto res = client_->Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res);
    return res;
  };
  const nlohmann::json base = {{"prompt", "And the king said unto"},
                               {"max_tokens", 12},
                               {"temperature", 0},
                               {"ignore_eos", true}};
  nlohmann::json routed = base;
  routed["routing"] = {{"top_k", 8}};
  auto whole = post(routed);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const std::string text = nlohmann::json::parse(whole->body)["choices"][0]["text"];
  auto own = post(base);
  ASSERT_EQ(own->status, 200) << own->body;
  nlohmann::json nucleus = base;
  nucleus["routing"] = {{"top_p", 0.4}};
  auto nucleus_res = post(nucleus);
  ASSERT_EQ(nucleus_res->status, 200) << nucleus_res->body;
  const std::string own_text = nlohmann::json::parse(own->body)["choices"][0]["text"];
  const std::string nucleus_text = nlohmann::json::parse(nucleus_res->body)["choices"][0]["text"];
  EXPECT_TRUE(text != own_text || nucleus_text != own_text) << "routing changed nothing";

  routed["stream"] = true;
  auto streamed = post(routed);
  ASSERT_EQ(streamed->status, 200);
  EXPECT_EQ(JoinedSseText(streamed->body), text);

  nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                         {"max_tokens", 4},
                         {"routing", {{"top_p", 0.7}}}};
  EXPECT_EQ(post(chat, "/v1/chat/completions")->status, 200);
  chat["routing"] = {{"top_k", 9}};
  auto bad_chat = post(chat, "/v1/chat/completions");
  EXPECT_EQ(bad_chat->status, 400);
  EXPECT_EQ(nlohmann::json::parse(bad_chat->body)["error"]["param"], "routing.top_k");
  for (const nlohmann::json& bad :
       {nlohmann::json{{"top_k", 0}}, nlohmann::json{{"top_p", 2}},
        nlohmann::json{{"top_k", 2}, {"top_p", 0.5}}, nlohmann::json("top_k")}) {
    nlohmann::json body = base;
    body["routing"] = bad;
    auto res = post(body);
    EXPECT_EQ(res->status, 400) << bad.dump();
    EXPECT_THAT(nlohmann::json::parse(res->body)["error"]["param"].get<std::string>(),
                ::testing::StartsWith("routing"));
  }

  // SCMoE: served, and streamed with the same text.
  nlohmann::json pair = base;
  pair["self_contrast"] = {{"beta", 0.9}, {"weak_rank", 3}};
  auto pair_res = post(pair);
  ASSERT_EQ(pair_res->status, 200) << pair_res->body;
  const nlohmann::json pair_out = nlohmann::json::parse(pair_res->body);
  EXPECT_EQ(pair_out["usage"]["prompt_tokens"],
            nlohmann::json::parse(own->body)["usage"]["prompt_tokens"]);
  EXPECT_NE(pair_out["choices"][0]["text"], own_text) << "self-contrast changed nothing";
  pair["stream"] = true;
  auto pair_stream = post(pair);
  ASSERT_EQ(pair_stream->status, 200);
  EXPECT_EQ(JoinedSseText(pair_stream->body), pair_out["choices"][0]["text"]);
  nlohmann::json bad_pair = base;
  bad_pair["self_contrast"] = {{"weak_rank", 9}};
  auto bad_pair_res = post(bad_pair);
  EXPECT_EQ(bad_pair_res->status, 400);
  EXPECT_EQ(nlohmann::json::parse(bad_pair_res->body)["error"]["param"], "self_contrast.weak_rank");

  // A client that hangs up mid-stream: the request (a routed pair) ends and frees both
  // sequences' blocks.
  nlohmann::json long_one = base;
  long_one["max_tokens"] = 900;
  long_one["stream"] = true;
  long_one["routing"] = {{"top_p", 0.9}};
  long_one["self_contrast"] = nlohmann::json::object();
  int chunks = 0;
  httplib::Client hangs_up("127.0.0.1", server_->http_port());
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = long_one.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  EXPECT_FALSE(hangs_up.send(req));
  EXPECT_GE(chunks, 3);

  std::string text_metrics;
  for (int i = 0; i < 100; ++i) {
    auto metrics = client_->Get("/metrics");
    ASSERT_TRUE(metrics);
    text_metrics = metrics->body;
    if (text_metrics.find("moe_num_requests_running 0") != std::string::npos &&
        text_metrics.find("moe_requests_finished_total{reason=\"abort\"} 1") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_THAT(text_metrics, HasSubstr("moe_requests_finished_total{reason=\"abort\"} 1"));
  EXPECT_THAT(text_metrics, HasSubstr("moe_kv_cache_usage_ratio 0"));
  // Five routed requests: top_k 8 twice (whole, streamed), top_p 0.4, the chat, the cut
  // one; three pairs: whole, streamed, the cut one.
  EXPECT_THAT(text_metrics, HasSubstr("moe_requests_with_option_total{option=\"routing\"} 5"));
  EXPECT_THAT(text_metrics,
              HasSubstr("moe_requests_with_option_total{option=\"self_contrast\"} 3"));
  EXPECT_THAT(text_metrics, ::testing::ContainsRegex("moe_experts_per_token_count [1-9]"));
  // Some (token, layer) used all 8 experts and none used more: the le="6" bucket is below
  // the le="8" one, which already holds the count.
  std::smatch m6, m8, count;
  ASSERT_TRUE(std::regex_search(text_metrics, m6,
                                std::regex("moe_experts_per_token_bucket\\{le=\"6\"\\} (\\d+)")));
  ASSERT_TRUE(std::regex_search(text_metrics, m8,
                                std::regex("moe_experts_per_token_bucket\\{le=\"8\"\\} (\\d+)")));
  ASSERT_TRUE(
      std::regex_search(text_metrics, count, std::regex("moe_experts_per_token_count (\\d+)")));
  EXPECT_LT(std::stoll(m6[1]), std::stoll(m8[1]));
  EXPECT_EQ(std::stoll(m8[1]), std::stoll(count[1]));
}

// SIGTERM with a short grace: what runs past it ends with a clear error (a stream with an
// error event and [DONE], a non-streamed request with a 503 body), new requests are
// refused, and the process exits by the grace plus a small margin.
TEST(HttpDrainTest, TheGraceEndsEveryLiveRequestWithAClearErrorAndTheProcessExits) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(MOE_SERVER_BINARY, {"--drain-seconds", "0.5", "--max-seqs", "1"});
  ASSERT_NE(server, nullptr);
  const int port = server->http_port();
  auto body = [](bool stream) {
    return nlohmann::json{{"prompt", "Once upon a time"},
                          {"max_tokens", 1000},
                          {"ignore_eos", true},
                          {"stream", stream}}
        .dump();
  };
  // One engine slot: the first request runs, the rest wait their turn, the stream behind
  // eight requests of 1,000 tokens (about 0.3 s each here) and one more behind it.
  constexpr int kWhole = 9;
  std::vector<std::optional<httplib::Response>> whole(kWhole);
  std::vector<std::thread> threads;
  std::string streamed;
  auto post = [&](int i) {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30, 0);
    if (httplib::Result res = client.Post("/v1/completions", body(false), "application/json")) {
      whole[i] = *res;
    }
  };
  for (int i = 0; i < kWhole - 1; ++i) {
    threads.emplace_back(post, i);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  threads.emplace_back([&] {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body(true);
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
      streamed.append(data, len);
      return true;
    };
    client.send(req);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  threads.emplace_back(post, kWhole - 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  const auto start = std::chrono::steady_clock::now();
  int exit_code = -2;
  double seconds = 0;
  std::thread stopper([&] {  // one SIGTERM (a second one would skip the grace)
    exit_code = server->Stop(std::chrono::seconds(20));
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  httplib::Client late("127.0.0.1", port);
  late.set_read_timeout(5, 0);
  if (auto res = late.Post("/v1/completions", body(false), "application/json")) {
    EXPECT_EQ(res->status, 503) << res->body;  // draining: refused (or the port is closed)
  }
  stopper.join();
  EXPECT_EQ(exit_code, 0);
  for (std::thread& t : threads) t.join();
  EXPECT_LT(seconds, 0.5 + 2.5) << "the grace plus a small margin";

  // The stream was cut: its last events are the error, then [DONE].
  const size_t error = streamed.rfind("data: {\"error\"");
  ASSERT_NE(error, std::string::npos) << streamed.substr(0, 300);
  EXPECT_THAT(streamed.substr(error), HasSubstr("server_shutdown"));
  EXPECT_EQ(streamed.substr(streamed.size() - 14), "data: [DONE]\n\n");
  int cut = 0;
  for (const std::optional<httplib::Response>& res : whole) {
    ASSERT_TRUE(res) << "a non-streamed request got no response";
    if (res->status == 200) continue;
    EXPECT_EQ(res->status, 503) << res->body;
    EXPECT_THAT(res->body, HasSubstr("server_shutdown"));
    ++cut;
  }
  EXPECT_GE(cut, 2) << "the requests still waiting at the end of the grace were cut";
}

}  // namespace
}  // namespace moe::testing
