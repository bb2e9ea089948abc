#include "client/transport.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "httplib.h"
#include "moe/v1/serving.grpc.pb.h"

namespace moe::client {
namespace {

using json = nlohmann::json;

double Since(Clock::time_point origin) {
  return std::chrono::duration<double>(Clock::now() - origin).count();
}

// Records one streamed chunk: its time, the first-token time, the caller's callback.
void OnChunk(std::string_view text, int tokens, Clock::time_point origin, RequestRecord* record,
             const std::function<void(std::string_view)>& on_text, int* counted) {
  if (text.empty() && tokens == 0) return;
  const double t = Since(origin);
  if (!record->first_token) record->first_token = t;
  record->token_times.push_back(t);
  *counted += tokens > 0 ? tokens : 1;
  if (on_text && !text.empty()) on_text(text);
}

class GrpcTransport final : public Transport {
 public:
  GrpcTransport(std::string target, int channels) : target_(std::move(target)) {
    for (int i = 0; i < std::max(channels, 1); ++i) {
      grpc::ChannelArguments args;
      // Distinct arguments and a local subchannel pool: each channel its own connection.
      args.SetInt("moe.client.channel_index", i);
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetMaxReceiveMessageSize(64 << 20);
      auto channel = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
      stubs_.push_back(moe::v1::Serving::NewStub(channel));
    }
  }

  RequestRecord Run(const PromptSpec& prompt, const GenerateOptions& options,
                    Clock::time_point origin,
                    std::function<void(std::string_view)> on_text) override {
    moe::v1::GenerateRequest request;
    if (!prompt.token_ids.empty()) {
      request.mutable_token_ids()->mutable_ids()->Add(prompt.token_ids.begin(),
                                                      prompt.token_ids.end());
    } else {
      request.set_text(prompt.text);
    }
    if (prompt.max_tokens > 0) request.set_max_tokens(prompt.max_tokens);
    if (options.temperature) request.set_temperature(*options.temperature);
    if (options.top_p) request.set_top_p(*options.top_p);
    if (options.seed) request.set_seed(*options.seed);
    request.set_ignore_eos(options.ignore_eos);
    const Extensions& x = options.extensions;
    if (x.routing_top_k) request.mutable_routing()->set_top_k(*x.routing_top_k);
    if (x.routing_top_p) request.mutable_routing()->set_top_p(*x.routing_top_p);
    if (x.self_contrast) {
      moe::v1::SelfContrast* sc = request.mutable_self_contrast();
      if (x.alpha) sc->set_alpha(*x.alpha);
      if (x.beta) sc->set_beta(*x.beta);
      if (x.weak_rank) sc->set_weak_rank(*x.weak_rank);
      if (x.ban_eos) sc->set_ban_eos(true);
    }

    RequestRecord record;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options.timeout);
    moe::v1::Serving::Stub& stub = *stubs_[next_.fetch_add(1) % stubs_.size()];
    record.start = Since(origin);
    std::unique_ptr<grpc::ClientReader<moe::v1::GenerateResponse>> reader =
        stub.Generate(&context, request);
    moe::v1::GenerateResponse response;
    int counted = 0;
    bool finished = false;
    std::string text;  // kept only when not streaming, to deliver at the end
    while (reader->Read(&response)) {
      if (options.stream) {
        OnChunk(response.text(), response.token_ids_size(), origin, &record, on_text, &counted);
      } else {
        counted += response.token_ids_size();
        text += response.text();
      }
      if (response.has_finish()) {
        finished = true;
        record.prompt_tokens = response.finish().usage().prompt_tokens();
        record.output_tokens = response.finish().usage().completion_tokens();
      }
    }
    const grpc::Status status = reader->Finish();
    record.end = Since(origin);
    if (!options.stream) {
      record.first_token = record.end;
      record.token_times.push_back(record.end);
      if (on_text && !text.empty()) on_text(text);
    }
    if (!status.ok()) {
      record.error = GrpcErrorKind(status.error_code());
      record.error_message = status.error_message();
    } else if (!finished) {
      record.error = "incomplete";
      record.error_message = "the stream ended without a finish message";
    }
    if (record.output_tokens == 0) record.output_tokens = counted;
    return record;
  }

  absl::StatusOr<json> GetModelInfo() override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    moe::v1::GetModelInfoResponse info;
    const grpc::Status status = stubs_[0]->GetModelInfo(&context, {}, &info);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("GetModelInfo on ", target_, ": ",
                                                 GrpcErrorKind(status.error_code()), ": ",
                                                 status.error_message()));
    }
    return json{{"model_name", info.model_name()},
                {"architecture", info.architecture()},
                {"model_type", info.model_type()},
                {"vocab_size", info.vocab_size()},
                {"context_length", info.context_length()},
                {"num_experts", info.num_experts()},
                {"num_experts_per_token", info.num_experts_per_token()},
                {"num_layers", info.num_layers()},
                {"hidden_size", info.hidden_size()}};
  }

  std::string Describe() const override { return "grpc://" + target_; }

 private:
  std::string target_;
  std::vector<std::unique_ptr<moe::v1::Serving::Stub>> stubs_;
  std::atomic<size_t> next_{0};
};

class OpenAiHttpTransport final : public Transport {
 public:
  OpenAiHttpTransport(std::string base_url, std::string model)
      : base_url_(std::move(base_url)), model_(std::move(model)) {}

  RequestRecord Run(const PromptSpec& prompt, const GenerateOptions& options,
                    Clock::time_point origin,
                    std::function<void(std::string_view)> on_text) override {
    json body = {{"stream", options.stream}};
    if (prompt.max_tokens > 0) body["max_tokens"] = prompt.max_tokens;
    if (!prompt.token_ids.empty()) {
      body["prompt"] = prompt.token_ids;
    } else {
      body["prompt"] = prompt.text;
    }
    if (!model_.empty()) body["model"] = model_;
    if (options.stream) body["stream_options"] = {{"include_usage", true}};
    if (options.temperature) body["temperature"] = *options.temperature;
    if (options.top_p) body["top_p"] = *options.top_p;
    if (options.seed) body["seed"] = *options.seed;
    if (options.ignore_eos) body["ignore_eos"] = true;
    const Extensions& x = options.extensions;
    if (x.routing_top_k) body["routing"] = {{"top_k", *x.routing_top_k}};
    if (x.routing_top_p) body["routing"] = {{"top_p", *x.routing_top_p}};
    if (x.self_contrast) {
      json sc = json::object();
      if (x.alpha) sc["alpha"] = *x.alpha;
      if (x.beta) sc["beta"] = *x.beta;
      if (x.weak_rank) sc["weak_rank"] = *x.weak_rank;
      if (x.ban_eos) sc["ban_eos"] = true;
      body["self_contrast"] = sc;
    }

    RequestRecord record;
    // A keep-alive connection from the pool, as HTTP clients (the openai package's
    // httpx, browsers) reuse theirs; returned only after a clean response.
    std::unique_ptr<httplib::Client> pooled = Acquire();
    httplib::Client& client = *pooled;
    const auto timeout_s = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
    client.set_connection_timeout(std::min<int64_t>(timeout_s.count(), 10), 0);
    client.set_read_timeout(timeout_s.count(), 0);
    client.set_write_timeout(timeout_s.count(), 0);

    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.set_header("Accept", options.stream ? "text/event-stream" : "application/json");
    req.body = body.dump();

    int status_code = 0;
    std::string raw;      // the whole body, for errors and non-streamed responses
    std::string pending;  // SSE bytes not yet split into events
    bool done = false, timed_out = false, finished = false;
    int counted = 0;
    std::string parse_error;
    const Clock::time_point deadline = Clock::now() + options.timeout;
    auto handle_event = [&](std::string_view data) {
      if (data == "[DONE]") {
        done = true;
        return;
      }
      json chunk = json::parse(data, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_discarded() || !chunk.is_object()) {
        parse_error = absl::StrCat("bad SSE data: ", ToAbsl(data.substr(0, 200)));
        return;
      }
      if (chunk.contains("error")) {
        parse_error = chunk["error"].value("message", chunk["error"].dump());
        return;
      }
      std::string_view text;
      if (auto c = chunk.find("choices"); c != chunk.end() && c->is_array() && !c->empty()) {
        const json& choice = (*c)[0];
        if (auto t = choice.find("text"); t != choice.end() && t->is_string()) {
          text = t->get_ref<const std::string&>();
        }
        if (auto f = choice.find("finish_reason"); f != choice.end() && !f->is_null()) {
          finished = true;
        }
      }
      OnChunk(text, 0, origin, &record, on_text, &counted);
      if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
        record.prompt_tokens = u->value("prompt_tokens", 0);
        record.output_tokens = u->value("completion_tokens", 0);
        finished = true;
      }
    };
    req.response_handler = [&](const httplib::Response& res) {
      status_code = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      if (Clock::now() > deadline) {
        timed_out = true;
        return false;
      }
      if (status_code != 200 || !options.stream) {
        raw.append(data, size);
        return true;
      }
      pending.append(data, size);
      // Events end with a blank line; each "data:" line of an event carries JSON.
      size_t pos;
      while ((pos = pending.find("\n\n")) != std::string::npos) {
        std::string_view event(pending.data(), pos);
        while (!event.empty()) {
          const size_t eol = event.find('\n');
          std::string_view line = event.substr(0, eol);
          if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
          if (line.substr(0, 5) == "data:") {
            std::string_view data_field = line.substr(5);
            if (!data_field.empty() && data_field.front() == ' ') data_field.remove_prefix(1);
            handle_event(data_field);
          }
          if (eol == std::string_view::npos) break;
          event.remove_prefix(eol + 1);
        }
        pending.erase(0, pos + 2);
      }
      return true;
    };

    record.start = Since(origin);
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool sent = client.send(req, res, error);
    record.end = Since(origin);
    if (!sent || error != httplib::Error::Success) {
      if (timed_out || Clock::now() > deadline) {
        record.error = "timeout";
      } else if (error == httplib::Error::Connection ||
                 error == httplib::Error::ConnectionTimeout) {
        record.error = "connect";
      } else {
        record.error = "http_io";
      }
      record.error_message = httplib::to_string(error);
    } else if (status_code != 200) {
      record.error = absl::StrCat("http_", status_code);
      record.error_message = raw.substr(0, 500);
    } else if (!options.stream) {
      json full = json::parse(raw, nullptr, false);
      if (full.is_discarded() || !full.contains("choices")) {
        record.error = "bad_response";
        record.error_message = raw.substr(0, 500);
      } else {
        record.first_token = record.end;
        record.token_times.push_back(record.end);
        const std::string text = full["choices"][0].value("text", "");
        if (on_text && !text.empty()) on_text(text);
        if (full.contains("usage")) {
          record.prompt_tokens = full["usage"].value("prompt_tokens", 0);
          record.output_tokens = full["usage"].value("completion_tokens", 0);
        }
      }
    } else if (!parse_error.empty()) {
      record.error = "stream_error";
      record.error_message = parse_error;
    } else if (!done && !finished) {
      record.error = "incomplete";
      record.error_message = "the event stream ended before [DONE]";
    }
    if (record.output_tokens == 0) record.output_tokens = counted;
    if (record.error.empty()) Release(std::move(pooled));
    return record;
  }

  absl::StatusOr<json> GetModelInfo() override {
    httplib::Client client(base_url_);
    client.set_connection_timeout(10, 0);
    client.set_read_timeout(10, 0);
    httplib::Result res = client.Get("/v1/models");
    if (!res) {
      return absl::UnavailableError(
          absl::StrCat("GET ", base_url_, "/v1/models: ", httplib::to_string(res.error())));
    }
    if (res->status != 200) {
      return absl::UnavailableError(
          absl::StrCat("GET ", base_url_, "/v1/models: HTTP ", res->status));
    }
    json models = json::parse(res->body, nullptr, false);
    if (models.is_discarded() || !models.contains("data") || !models["data"].is_array() ||
        models["data"].empty()) {
      return absl::UnavailableError(absl::StrCat("GET ", base_url_, "/v1/models: no models"));
    }
    json info = models["data"][0];
    if (info.contains("id")) info["model_name"] = info["id"];
    return info;
  }

  std::string Describe() const override { return base_url_; }

  void set_model(std::string model) { model_ = std::move(model); }

 private:
  std::unique_ptr<httplib::Client> Acquire() {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (!idle_.empty()) {
        std::unique_ptr<httplib::Client> client = std::move(idle_.back());
        idle_.pop_back();
        return client;
      }
    }
    auto client = std::make_unique<httplib::Client>(base_url_);
    client->set_keep_alive(true);
    client->set_tcp_nodelay(true);  // a request is head + body: no Nagle wait between them
    return client;
  }
  void Release(std::unique_ptr<httplib::Client> client) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    idle_.push_back(std::move(client));
  }

  std::string base_url_;
  std::string model_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<httplib::Client>> idle_;  // guarded by pool_mu_
};

}  // namespace

std::string GrpcErrorKind(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED) return "timeout";
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) {
    return absl::StrCat("grpc_", kNames[code]);
  }
  return absl::StrCat("grpc_", code);
}

absl::Status ProbeTcp(const std::string& address, std::chrono::milliseconds timeout) {
  std::string rest = address;
  std::string default_port;
  if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
    rest = rest.substr(0, rest.find('/'));
    default_port = "80";
  } else if (rest.find("://") != std::string::npos || rest.rfind("unix:", 0) == 0 ||
             rest.rfind("dns:", 0) == 0 || rest.rfind("ipv4:", 0) == 0 ||
             rest.rfind("ipv6:", 0) == 0) {
    return absl::OkStatus();  // a gRPC name form: gRPC resolves it
  }
  std::string host, port;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return absl::OkStatus();
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else {
    const size_t colon = rest.rfind(':');
    host = colon == std::string::npos ? rest : rest.substr(0, colon);
    if (colon != std::string::npos) port = rest.substr(colon + 1);
  }
  if (port.empty()) port = default_port;
  if (host.empty() || port.empty()) return absl::OkStatus();

  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot reach ", address, ": cannot resolve '", host,
                                               "' (", gai_strerror(rc), ")"));
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int error = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        pollfd pfd = {fd, POLLOUT, 0};
        const int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
        socklen_t len = sizeof(error);
        if (ready == 0) {
          error = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
          error = errno;
        }
      }
    }
    close(fd);
    if (error == 0) {
      freeaddrinfo(found);
      return absl::OkStatus();
    }
    switch (error) {
      case ECONNREFUSED:
        why = "connection refused (is the server running there?)";
        break;
      case ETIMEDOUT:
        why = absl::StrCat("no answer within ", timeout.count(), " ms");
        break;
      case EHOSTUNREACH:
      case ENETUNREACH:
        why = "no route to the host";
        break;
      default:
        why = std::strerror(error);
    }
  }
  freeaddrinfo(found);
  return absl::UnavailableError(absl::StrCat("cannot reach ", address, ": ", why));
}

std::unique_ptr<Transport> MakeGrpcTransport(const std::string& target, int channels) {
  return std::make_unique<GrpcTransport>(target, channels);
}

absl::StatusOr<std::unique_ptr<Transport>> MakeOpenAiHttpTransport(const std::string& base_url,
                                                                   const std::string& model) {
  if (base_url.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--url must start with http:// (got '", base_url, "')"));
  }
  std::string url = base_url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  auto transport = std::make_unique<OpenAiHttpTransport>(url, model);
  if (model.empty()) {
    // Servers such as vLLM require "model"; take the one the server lists.
    absl::StatusOr<json> info = transport->GetModelInfo();
    if (info.ok() && info->contains("id") && (*info)["id"].is_string()) {
      transport->set_model((*info)["id"].get<std::string>());
    }
  }
  return transport;
}

}  // namespace moe::client
