// moe-client: a streaming command-line client and a load tester for moe-server (gRPC) and
// any OpenAI-compatible /v1/completions endpoint (HTTP with server-sent events).
//
//   moe-client generate --target 127.0.0.1:50051 --prompt "Hello"
//   moe-client bench --url http://127.0.0.1:8000 --concurrency 8 --num-requests 200
//
// The bench subcommand reports what vLLM's `bench serve` reports (throughput, TTFT, TPOT,
// ITL, E2E, goodput), writes a JSON result file and sweeps over concurrencies or rates.
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/cli_checks.h"
#include "client/arrivals.h"
#include "client/bench_runner.h"
#include "client/prompts.h"
#include "client/records.h"
#include "client/stats.h"
#include "client/transport.h"
#include "nlohmann/json.hpp"

namespace moe::client {
namespace {

using json = nlohmann::json;

// Flags shared by both subcommands: where to connect and how long one request may take.
struct Endpoint {
  std::string target;  // HOST:PORT for gRPC
  std::string url;     // http://HOST:PORT for the OpenAI API
  std::string model;   // "model" field for HTTP; empty: the first of GET /v1/models
  double request_timeout = 300;
};

void AddEndpointFlags(CLI::App* app, Endpoint* e) {
  auto* target = app->add_option("--target", e->target, "moe-server gRPC address HOST:PORT");
  auto* url =
      app->add_option("--url", e->url, "Base URL http://HOST:PORT of an OpenAI-compatible server");
  target->excludes(url);
  app->add_option("--model", e->model,
                  "HTTP: the request's \"model\" (default: the first of GET /v1/models)");
  app->add_option("--request-timeout", e->request_timeout,
                  "Seconds one request may take before it counts as a \"timeout\" error")
      ->capture_default_str()
      ->check(moe::cli::Above<double>(0.0));
}

std::unique_ptr<Transport> Connect(const Endpoint& e) {
  // An unreachable server fails now, in words, not as one error per request.
  if (!e.target.empty() || !e.url.empty()) {
    if (absl::Status s = ProbeTcp(e.target.empty() ? e.url : e.target, std::chrono::seconds(5));
        !s.ok()) {
      std::cerr << "moe-client: " << s.message() << "\n";
      return nullptr;
    }
  }
  if (!e.target.empty()) return MakeGrpcTransport(e.target);
  if (!e.url.empty()) {
    absl::StatusOr<std::unique_ptr<Transport>> t = MakeOpenAiHttpTransport(e.url, e.model);
    if (!t.ok()) {
      std::cerr << "moe-client: " << t.status().message() << "\n";
      return nullptr;
    }
    return std::move(*t);
  }
  std::cerr << "moe-client: give --target HOST:PORT (gRPC) or --url http://HOST:PORT (HTTP)\n";
  return nullptr;
}

json OptionalJson(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json RecordJson(const RequestRecord& r) {
  return {{"index", r.index},
          {"warmup", r.warmup},
          {"start", r.start},
          {"first_token", OptionalJson(r.first_token)},
          {"end", r.end},
          {"ttft", OptionalJson(r.ttft())},
          {"tpot", OptionalJson(r.tpot())},
          {"e2e", r.e2e()},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens", r.output_tokens},
          {"token_times", r.token_times},
          {"error", r.error},
          {"error_message", r.error_message}};
}

json DistributionJson(const Distribution& d) {
  return {{"count", d.count}, {"mean", d.mean}, {"p50", d.p50},
          {"p90", d.p90},     {"p99", d.p99},   {"max", d.max}};
}

json SummaryJson(const Summary& s) {
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"errors_by_kind", s.errors_by_kind},
          {"duration_seconds", s.duration_seconds},
          {"request_throughput", s.request_throughput},
          {"output_token_throughput", s.output_token_throughput},
          {"total_token_throughput", s.total_token_throughput},
          {"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"ttft_seconds", DistributionJson(s.ttft)},
          {"tpot_seconds", DistributionJson(s.tpot)},
          {"itl_seconds", DistributionJson(s.itl)},
          {"e2e_seconds", DistributionJson(s.e2e)},
          {"good", s.good},
          {"goodput", s.goodput},
          {"peak_concurrency", s.peak_concurrency}};
}

// Host name, CPU model and core count (from /proc/cpuinfo) and the kernel, for the result
// file: a number means little without the machine it was measured on.
json MachineJson() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string cpu_model;
  int processors = 0;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("processor", 0) == 0) ++processors;
    if (cpu_model.empty() && line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos)
        cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  utsname uts{};
  uname(&uts);
  return {{"hostname", host},
          {"cpu_model", cpu_model},
          {"cpu_processors", processors},
          {"hardware_concurrency", std::thread::hardware_concurrency()},
          {"kernel", absl::StrCat(uts.sysname, " ", uts.release)},
          {"machine", uts.machine}};
}

// ---------------------------------------------------------------------------------------
// generate

// --routing-top-k/-p and --self-contrast (with --scmoe-*) on both subcommands.
void AddExtensionFlags(CLI::App* app, Extensions* x) {
  auto* k = app->add_option("--routing-top-k", x->routing_top_k,
                            "moe-serve routing: N experts per token in every MoE layer");
  auto* p = app->add_option("--routing-top-p", x->routing_top_p,
                            "moe-serve routing: the fewest experts whose router mass exceeds P");
  k->excludes(p);
  auto* sc = app->add_flag("--self-contrast", x->self_contrast,
                           "moe-serve SCMoE self-contrast decoding (defaults: alpha 0.1, beta "
                           "0.5, weak rank 2)");
  app->add_option("--scmoe-alpha", x->alpha, "SCMoE plausibility cutoff, in (0, 1]")->needs(sc);
  app->add_option("--scmoe-beta", x->beta, "SCMoE contrast strength, >= 0")->needs(sc);
  app->add_option("--scmoe-weak-rank", x->weak_rank, "SCMoE weak pass's expert rank (1-based)")
      ->needs(sc);
  app->add_flag("--scmoe-ban-eos", x->ban_eos, "SCMoE: never choose EOS")->needs(sc);
}

struct GenerateFlags {
  Endpoint endpoint;
  Extensions extensions;
  std::string prompt;
  int max_tokens = 64;
  std::optional<float> temperature, top_p;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  bool json = false;
  bool no_stream = false;
};

int RunGenerate(const GenerateFlags& f) {
  std::unique_ptr<Transport> transport = Connect(f.endpoint);
  if (!transport) return 2;
  GenerateOptions options;
  options.temperature = f.temperature;
  options.top_p = f.top_p;
  options.seed = f.seed;
  options.ignore_eos = f.ignore_eos;
  options.extensions = f.extensions;
  options.stream = !f.no_stream;
  options.timeout = std::chrono::milliseconds(std::llround(f.endpoint.request_timeout * 1000));
  PromptSpec prompt{f.prompt, {}, f.max_tokens};
  std::string text;
  RequestRecord r = transport->Run(prompt, options, Clock::now(), [&](std::string_view delta) {
    text.append(delta);
    if (!f.json) {
      std::fwrite(delta.data(), 1, delta.size(), stdout);
      std::fflush(stdout);
    }
  });
  if (f.json) {
    json out = {{"text", text},
                {"usage",
                 {{"prompt_tokens", r.prompt_tokens},
                  {"completion_tokens", r.output_tokens},
                  {"total_tokens", r.prompt_tokens + r.output_tokens}}},
                {"ttft_seconds", OptionalJson(r.ttft())},
                {"tpot_seconds", OptionalJson(r.tpot())},
                {"e2e_seconds", r.e2e()},
                {"chunks", r.token_times.size()},
                {"server", transport->Describe()}};
    if (!r.ok()) {
      out["error"] = {{"kind", r.error}, {"message", r.error_message}};
      out["usage"] = nullptr;  // not a zero count
    }
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("\n\n");
    if (!r.ok()) {
      // No usage or timing lines: zeros would read as a measurement.
      std::fprintf(stderr, "error: %s: %s\n", r.error.c_str(), r.error_message.c_str());
      return 1;
    }
    std::printf("usage: %d prompt + %d completion tokens\n", r.prompt_tokens, r.output_tokens);
    std::printf("time: TTFT %.1f ms", r.ttft() ? *r.ttft() * 1e3 : 0.0);
    if (r.tpot()) std::printf(", TPOT %.2f ms", *r.tpot() * 1e3);
    std::printf(", total %.1f ms", r.e2e() * 1e3);
    if (r.e2e() > 0) std::printf(" (%.1f tok/s)", r.output_tokens / r.e2e());
    std::printf("\n");
  }
  return r.ok() ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// bench

struct BenchFlags {
  Endpoint endpoint;
  int concurrency = 1;
  std::optional<double> request_rate;
  double burstiness = 1.0;
  int num_requests = 0;
  double duration = 0;
  int warmup = 0;
  int max_in_flight = 1024;
  int input_len = 128, output_len = 128;
  std::string input_len_range, output_len_range;
  std::string dataset;
  bool ignore_eos = false;
  std::optional<float> temperature, top_p;
  Extensions extensions;
  std::string slo;
  std::string output;
  std::string sweep;
  std::string plot;
  uint64_t seed = 0;
  bool progress = false;
};

absl::StatusOr<Slo> ParseSlo(const std::string& text) {
  Slo slo;
  if (text.empty()) return slo;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    double seconds = 0;
    if (!absl::SimpleAtod(kv.second, &seconds) || !(seconds > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--slo: bad value in '", part, "'"));
    }
    if (kv.first == "ttft") {
      slo.ttft_seconds = seconds;
    } else if (kv.first == "tpot") {
      slo.tpot_seconds = seconds;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo: unknown limit '", kv.first, "' (ttft=S,tpot=S)"));
    }
  }
  return slo;
}

absl::StatusOr<std::vector<double>> ParseLevels(const std::string& text) {
  std::vector<double> levels;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--sweep: bad level '", part, "'"));
    }
    levels.push_back(v);
  }
  if (levels.empty()) return absl::InvalidArgumentError("--sweep: no levels");
  return levels;
}

absl::StatusOr<std::vector<PromptSpec>> MakePrompts(const BenchFlags& f, int needed) {
  if (!f.dataset.empty()) return ReadPromptsJsonl(f.dataset, f.output_len);
  SyntheticPromptOptions o;
  o.num_prompts = needed;
  o.seed = f.seed;
  o.input_len = LengthRange::Fixed(f.input_len);
  o.output_len = LengthRange::Fixed(f.output_len);
  if (!f.input_len_range.empty()) {
    absl::StatusOr<LengthRange> r = ParseLengthRange(f.input_len_range);
    if (!r.ok()) return r.status();
    o.input_len = *r;
  }
  if (!f.output_len_range.empty()) {
    absl::StatusOr<LengthRange> r = ParseLengthRange(f.output_len_range);
    if (!r.ok()) return r.status();
    o.output_len = *r;
  }
  return SyntheticPrompts(o);
}

std::string FormatLevel(double v) {
  return v == std::floor(v) ? absl::StrCat(static_cast<int64_t>(v)) : absl::StrCat(v);
}

std::string PathOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct SweepPoint {
  double level;
  Summary summary;
};

// Writes a data file and a gnuplot script into a temporary directory and runs gnuplot:
// the sweep's levels (concurrency or request rate, x) against TTFT, TPOT and E2E (left y,
// log scale) and output token throughput (right y), one point per level.
absl::Status PlotSweep(const std::vector<SweepPoint>& points, bool rates, const std::string& png,
                       const std::string& title) {
  const std::string gnuplot = PathOnPath("gnuplot");
  if (gnuplot.empty()) {
    return absl::FailedPreconditionError(
        "--plot needs gnuplot, which is not on PATH (Debian: apt-get install gnuplot-nox)");
  }
  char dir_template[] = "/tmp/moe-client-plot-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  const std::filesystem::path dir(dir_template);
  {
    std::ofstream data(dir / "sweep.dat");
    data << "# level output_tok_s ttft_p50_ms ttft_p99_ms tpot_p50_ms e2e_p50_ms\n";
    for (const SweepPoint& p : points) {
      const Summary& s = p.summary;
      data << p.level << " " << s.output_token_throughput << " " << s.ttft.p50 * 1e3 << " "
           << s.ttft.p99 * 1e3 << " " << s.tpot.p50 * 1e3 << " " << s.e2e.p50 * 1e3 << "\n";
    }
    std::ofstream script(dir / "sweep.gp");
    script << "set terminal png size 1000,640\n"
           << "set output '" << std::filesystem::absolute(png).string() << "'\n"
           << "set title \"" << title << "\" noenhanced\n"
           << "set xlabel '"
           << (rates ? "request rate (req/s)" : "concurrency (requests in flight)") << "'\n"
           << "set ylabel 'latency (ms)'\n"
           << "set y2label 'output token throughput (tok/s)'\n"
           << "set logscale y\n"
           << "set ytics nomirror\n"
           << "set y2tics\n"
           << "set y2range [0:*]\n"
           << "set grid\n"
           << "set key top left\n"
           << "plot '" << (dir / "sweep.dat").string()
           << "' using 1:3 with linespoints title 'TTFT p50', \\\n"
           << "  '' using 1:4 with linespoints title 'TTFT p99', \\\n"
           << "  '' using 1:5 with linespoints title 'TPOT p50', \\\n"
           << "  '' using 1:6 with linespoints title 'E2E p50', \\\n"
           << "  '' using 1:2 axes x1y2 with linespoints lw 2 title 'output tok/s'\n";
  }
  const std::string command =
      absl::StrCat("'", gnuplot, "' '", (dir / "sweep.gp").string(), "' 2>&1");
  const int rc = std::system(command.c_str());
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (rc != 0) return absl::InternalError(absl::StrCat("gnuplot failed (exit status ", rc, ")"));
  return absl::OkStatus();
}

int RunBenchCommand(const BenchFlags& f) {
  absl::StatusOr<Slo> slo = ParseSlo(f.slo);
  if (!slo.ok()) {
    std::cerr << "moe-client: " << slo.status().message() << "\n";
    return 2;
  }
  if (f.num_requests <= 0 && f.duration <= 0) {
    std::cerr << "moe-client: give --num-requests N or --duration S\n";
    return 2;
  }
  if (f.request_rate) {
    if (absl::Status s = ValidateArrivalParams(*f.request_rate, f.burstiness); !s.ok()) {
      std::cerr << "moe-client: " << s.message() << "\n";
      return 2;
    }
  }
  std::vector<double> levels;
  if (!f.sweep.empty()) {
    absl::StatusOr<std::vector<double>> l = ParseLevels(f.sweep);
    if (!l.ok()) {
      std::cerr << "moe-client: " << l.status().message() << "\n";
      return 2;
    }
    levels = *l;
  } else {
    levels = {f.request_rate ? *f.request_rate : static_cast<double>(f.concurrency)};
  }
  if (!f.plot.empty() && f.sweep.empty()) {
    std::cerr << "moe-client: --plot needs --sweep\n";
    return 2;
  }
  if (!f.plot.empty() && PathOnPath("gnuplot").empty()) {
    std::cerr << "moe-client: --plot needs gnuplot, which is not on PATH "
                 "(Debian: apt-get install gnuplot-nox)\n";
    return 2;
  }
  // Files the run ends by writing: a directory that is missing or not writable fails now,
  // not after the sweep.
  for (const std::string* path : {&f.plot, &f.output}) {
    if (path->empty()) continue;
    std::filesystem::path dir = std::filesystem::absolute(*path).parent_path();
    if (!std::filesystem::is_directory(dir) || access(dir.c_str(), W_OK) != 0) {
      std::cerr << "moe-client: cannot write " << *path << ": " << dir.string()
                << " is not a writable directory\n";
      return 2;
    }
  }
  // A duration-bounded run cycles through a pool of prompts.
  const int needed = f.warmup + (f.num_requests > 0 ? f.num_requests : 1000);
  absl::StatusOr<std::vector<PromptSpec>> prompts = MakePrompts(f, needed);
  if (!prompts.ok()) {
    std::cerr << "moe-client: " << prompts.status().message() << "\n";
    return 2;
  }
  std::unique_ptr<Transport> transport = Connect(f.endpoint);
  if (!transport) return 2;
  absl::StatusOr<json> model_info = transport->GetModelInfo();
  if (!model_info.ok()) {
    std::cerr << "moe-client: warning: " << model_info.status().message() << "\n";
  }

  BenchConfig config;
  config.concurrency = f.concurrency;
  config.request_rate = f.request_rate;
  config.burstiness = f.burstiness;
  config.num_requests = f.num_requests;
  config.duration_seconds = f.num_requests > 0 ? 0 : f.duration;
  config.warmup = f.warmup;
  config.max_in_flight = f.max_in_flight;
  config.seed = f.seed;
  config.progress = f.progress || isatty(STDERR_FILENO);
  config.options.temperature = f.temperature;
  config.options.top_p = f.top_p;
  config.options.seed = std::nullopt;
  config.options.ignore_eos = f.ignore_eos;
  config.options.extensions = f.extensions;
  config.options.timeout =
      std::chrono::milliseconds(std::llround(f.endpoint.request_timeout * 1000));

  const bool rates = f.request_rate.has_value();
  json runs = json::array();
  std::vector<SweepPoint> points;
  int total_failed = 0;
  for (double level : levels) {
    if (rates) {
      config.request_rate = level;
    } else {
      config.concurrency = static_cast<int>(level);
    }
    if (levels.size() > 1) {
      std::cerr << "[bench] " << (rates ? "request rate " : "concurrency ") << FormatLevel(level)
                << "\n";
    }
    std::vector<RequestRecord> records = RunBench(*transport, *prompts, config);
    Summary summary = Summarize(records, *slo);
    total_failed += summary.failed;
    if (levels.size() == 1) std::cout << FormatSummary(summary);
    points.push_back({level, summary});
    json run = {{rates ? "request_rate" : "concurrency", level},
                {"summary", SummaryJson(summary)},
                {"records", json::array()}};
    for (const RequestRecord& r : records) run["records"].push_back(RecordJson(r));
    runs.push_back(std::move(run));
  }

  if (levels.size() > 1) {
    std::printf("%10s %9s %12s %12s %12s %12s %12s %7s\n", rates ? "rate" : "concurrency", "req/s",
                "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "E2E p50 ms", "errors");
    for (const SweepPoint& p : points) {
      const Summary& s = p.summary;
      std::printf("%10s %9.2f %12.1f %12.1f %12.1f %12.2f %12.1f %7d\n",
                  FormatLevel(p.level).c_str(), s.request_throughput, s.output_token_throughput,
                  s.ttft.p50 * 1e3, s.ttft.p99 * 1e3, s.tpot.p50 * 1e3, s.e2e.p50 * 1e3, s.failed);
    }
  }

  if (!f.output.empty()) {
    json result = {
        {"tool", "moe-client bench"},
        {"configuration",
         {{"server", transport->Describe()},
          {"mode", rates ? "open_loop" : "closed_loop"},
          {"concurrency", f.concurrency},
          {"request_rate", f.request_rate ? json(*f.request_rate) : json(nullptr)},
          {"burstiness", f.burstiness},
          {"num_requests", f.num_requests},
          {"duration_seconds", f.duration},
          {"warmup", f.warmup},
          {"max_in_flight", f.max_in_flight},
          {"dataset", f.dataset},
          {"input_len", f.input_len_range.empty() ? json(f.input_len) : json(f.input_len_range)},
          {"output_len",
           f.output_len_range.empty() ? json(f.output_len) : json(f.output_len_range)},
          {"ignore_eos", f.ignore_eos},
          {"temperature", f.temperature ? json(*f.temperature) : json(nullptr)},
          {"top_p", f.top_p ? json(*f.top_p) : json(nullptr)},
          {"slo",
           {{"ttft_seconds", OptionalJson(slo->ttft_seconds)},
            {"tpot_seconds", OptionalJson(slo->tpot_seconds)}}},
          {"sweep", f.sweep},
          {"seed", f.seed},
          {"request_timeout_seconds", f.endpoint.request_timeout}}},
        {"machine", MachineJson()},
        {"model_info", model_info.ok() ? *model_info : json(nullptr)},
    };
    if (levels.size() == 1) {
      result["summary"] = runs[0]["summary"];
      result["records"] = std::move(runs[0]["records"]);
    } else {
      result["sweep"] = std::move(runs);
    }
    std::ofstream out(f.output);
    out << result.dump(2) << "\n";
    if (!out) {
      std::cerr << "moe-client: cannot write " << f.output << "\n";
      return 1;
    }
  }
  if (!f.plot.empty()) {
    std::string title = absl::StrCat("moe-client sweep against ", transport->Describe());
    if (model_info.ok() && model_info->contains("model_name")) {
      absl::StrAppend(&title, " (", (*model_info)["model_name"].get<std::string>(), ")");
    }
    if (absl::Status s = PlotSweep(points, rates, f.plot, title); !s.ok()) {
      std::cerr << "moe-client: " << s.message() << "\n";
      return 1;
    }
  }
  return total_failed == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "moe-client: streaming client and load tester for moe-server and "
      "OpenAI-compatible servers"};
  app.require_subcommand(1);

  GenerateFlags g;
  CLI::App* generate = app.add_subcommand("generate", "Stream one completion to the terminal");
  AddEndpointFlags(generate, &g.endpoint);
  generate->add_option("--prompt", g.prompt, "Prompt text")->required();
  generate->add_option("--max-tokens", g.max_tokens, "Tokens to generate at most")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  generate->add_option("--temperature", g.temperature, "Sampling temperature (0: greedy)");
  generate->add_option("--top-p", g.top_p, "Nucleus sampling mass");
  generate->add_option("--seed", g.seed, "Sampling seed");
  generate->add_flag("--ignore-eos", g.ignore_eos, "Do not stop at EOS");
  generate->add_flag("--json", g.json, "Print one JSON object (text, usage, timings)");
  generate->add_flag("--no-stream", g.no_stream, "Ask for one response instead of a stream");
  AddExtensionFlags(generate, &g.extensions);

  BenchFlags b;
  CLI::App* bench = app.add_subcommand("bench", "Load-test a server and report latencies");
  AddEndpointFlags(bench, &b.endpoint);
  auto* concurrency =
      bench->add_option("--concurrency", b.concurrency, "Closed loop: requests in flight (workers)")
          ->capture_default_str()
          ->check(moe::cli::AtLeast<int>(1));
  auto* rate = bench->add_option("--request-rate", b.request_rate,
                                 "Open loop: requests per second (Poisson arrivals)");
  rate->excludes(concurrency);
  bench
      ->add_option("--burstiness", b.burstiness,
                   "Open loop: gamma shape of the gaps; 1 Poisson, < 1 burstier")
      ->capture_default_str()
      ->needs(rate);
  auto* num = bench->add_option("--num-requests", b.num_requests, "Counted requests")
                  ->check(moe::cli::AtLeast<int>(1));
  auto* duration =
      bench->add_option("--duration", b.duration, "Seconds to issue requests (instead of a count)")
          ->check(moe::cli::Above<double>(0.0));
  num->excludes(duration);
  bench->add_option("--warmup", b.warmup, "Requests sent first and not counted")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(0));
  bench->add_option("--max-in-flight", b.max_in_flight, "Open loop: requests in flight at most")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  bench->add_option("--input-len", b.input_len, "Synthetic prompt length (words ~ tokens)")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  bench->add_option("--input-len-range", b.input_len_range,
                    "Synthetic prompt lengths drawn uniformly from MIN:MAX");
  bench->add_option("--output-len", b.output_len, "max_tokens of each request")
      ->capture_default_str()
      ->check(moe::cli::AtLeast<int>(1));
  bench->add_option("--output-len-range", b.output_len_range,
                    "max_tokens drawn uniformly from MIN:MAX");
  bench
      ->add_option("--dataset", b.dataset,
                   "JSONL prompts {\"prompt\": ..., \"max_tokens\": N} instead of synthetic ones")
      ->check(CLI::ExistingFile);
  bench->add_flag("--ignore-eos", b.ignore_eos, "Do not stop at EOS: exact output lengths");
  bench->add_option("--temperature", b.temperature, "Sampling temperature");
  bench->add_option("--top-p", b.top_p, "Nucleus sampling mass");
  AddExtensionFlags(bench, &b.extensions);
  bench->add_option("--slo", b.slo, "Goodput limits, e.g. ttft=0.5,tpot=0.05 (seconds)");
  bench->add_option("--output", b.output, "JSON result file");
  bench->add_option("--sweep", b.sweep,
                    "Comma-separated concurrencies (or rates with --request-rate) to run in turn");
  bench->add_option("--plot", b.plot, "With --sweep: PNG of throughput against latency (gnuplot)");
  bench->add_option("--seed", b.seed, "Seed of the synthetic prompts and arrival times")
      ->capture_default_str();
  bench->add_flag("--progress", b.progress, "Progress line on stderr even when it is not a TTY");

  CLI11_PARSE(app, argc, argv);
  if (generate->parsed()) return RunGenerate(g);
  return RunBenchCommand(b);
}

}  // namespace
}  // namespace moe::client

int main(int argc, char** argv) { return moe::client::Main(argc, argv); }
