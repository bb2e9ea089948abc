#include "server/grpc_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <cmath>
#include <filesystem>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "base/status_macros.h"
#include "engine/loader.h"
#include "grpc/health/v1/health.pb.h"
#include "moe/v1/serving.grpc.pb.h"
#include "server/api_keys.h"
#include "server/port_check.h"
#include "server/status_mapping.h"

namespace moe::server {
namespace {

constexpr size_t kMaxRequestIdBytes = 256;

// Generate and Tokenize take their request as raw bytes: protobuf refuses a proto3 string
// that is not valid UTF-8 while parsing, which gRPC would report as INTERNAL. Parsing it
// here turns that into the INVALID_ARGUMENT a bad request deserves.
template <typename Message>
absl::Status ParseRequest(const grpc::ByteBuffer& raw, Message* message) {
  grpc::ByteBuffer copy(raw);  // Deserialize consumes its buffer; slices are ref-counted
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request is not a valid ", ToAbsl(Message::descriptor()->full_name()),
                     ": malformed, or a string field (such as the prompt text) is not valid "
                     "UTF-8"));
  }
  return absl::OkStatus();
}

template <typename Message>
grpc::Status SerializeResponse(const Message& message, grpc::ByteBuffer* raw) {
  bool own_buffer = false;
  return grpc::SerializationTraits<Message>::Serialize(message, raw, &own_buffer);
}

v1::FinishReason ToProto(StopReason reason) {
  switch (reason) {
    case StopReason::kStop:
      return v1::FINISH_REASON_STOP;
    case StopReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case StopReason::kAbort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The gRPC deadline of a call as a steady-clock time; nullopt when the call has none.
std::optional<SteadyTime> CallDeadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             deadline - std::chrono::system_clock::now());
}

// One Generate call. The engine thread calls Pump through on_event after each event;
// gRPC calls OnWriteDone / OnCancel / OnDone. At most one write is in flight; events that
// arrive meanwhile are merged into the next message. The reactor keeps itself alive
// (self_) until OnDone; on_event holds only a weak_ptr, so a late event after OnDone is
// harmless.
class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                           public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(ServingEngine* engine, grpc::CallbackServerContext* context)
      : engine_(engine), context_(context) {}

  // Finishes the call before it starts (no API key).
  void Refuse(const grpc::Status& status) {
    self_ = shared_from_this();
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(status);
  }

  // Parses, validates and submits; finishes the call at once on a bad request.
  void Start(const grpc::ByteBuffer& raw) {
    self_ = shared_from_this();
    absl::StatusOr<GenerateRequest> request = ParseAndConvert(raw);
    absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        request.ok() ? engine_->Submit(*std::move(request),
                                       [weak = weak_from_this()] {
                                         if (auto self = weak.lock()) self->Pump();
                                       })
                     : request.status();
    std::lock_guard<std::mutex> lock(mu_);
    if (!stream.ok()) {
      FinishLocked(ToGrpcStatus(stream.status()));
      return;
    }
    stream_ = *std::move(stream);
    PumpLocked();
  }

  void Pump() {
    std::lock_guard<std::mutex> lock(mu_);
    PumpLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok || cancelled_) {  // the call is gone (client cancel or disconnect)
      if (stream_) stream_->Cancel();
      FinishLocked(grpc::Status::CANCELLED);
      return;
    }
    if (pending_error_) {
      FinishLocked(*pending_error_);
      return;
    }
    PumpLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (stream_) stream_->Cancel();
    // With a write in flight, OnWriteDone(false) finishes the call.
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    std::shared_ptr<GenerateCall> self;  // released after the lock, last
    std::lock_guard<std::mutex> lock(mu_);
    if (stream_) stream_->Cancel();  // no-op once the request has ended
    self.swap(self_);
  }

 private:
  absl::StatusOr<GenerateRequest> ParseAndConvert(const grpc::ByteBuffer& raw) {
    v1::GenerateRequest request;
    if (absl::Status s = ParseRequest(raw, &request); !s.ok()) return s;
    return ToEngineRequest(request, *engine_, CallDeadline(*context_));
  }

  // Sends what the stream has ready as one message; the last one carries the finish.
  void PumpLocked() {
    if (finished_ || writing_ || !stream_) return;
    v1::GenerateResponse response;
    bool final = false;
    while (std::optional<StreamEvent> event = stream_->TryNext()) {
      if (event->kind == StreamEvent::Kind::kTokens) {
        response.mutable_token_ids()->Add(event->token_ids.begin(), event->token_ids.end());
        response.mutable_text()->append(event->text);
        continue;
      }
      if (event->kind == StreamEvent::Kind::kError) {
        pending_error_ = ToGrpcStatus(event->error.ok() ? absl::InternalError("the request failed")
                                                        : event->error);
        break;
      }
      if (event->reason == StopReason::kAbort) {
        // The engine ends a request at its deadline with kAbort; the client must see
        // DEADLINE_EXCEEDED whichever side notices first, not an OK stream.
        const std::optional<SteadyTime> deadline = CallDeadline(*context_);
        if (deadline && std::chrono::steady_clock::now() >= *deadline) {
          pending_error_ =
              grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed");
          break;
        }
      }
      v1::Finish* finish = response.mutable_finish();
      finish->set_reason(ToProto(event->reason));
      finish->set_matched_stop(event->matched_stop);
      finish->mutable_usage()->set_prompt_tokens(event->usage.prompt_tokens);
      finish->mutable_usage()->set_completion_tokens(event->usage.completion_tokens);
      finish->set_queue_seconds(event->queue_seconds);
      finish->set_ttft_seconds(event->ttft_seconds);
      final = true;
      break;
    }
    const bool has_tokens = response.token_ids_size() > 0 || !response.text().empty();
    if (!final && !has_tokens) {
      if (pending_error_) FinishLocked(*pending_error_);
      return;
    }
    response.set_request_id(stream_->id());
    buffer_.Clear();  // the previous message's write is done; Serialize wants it empty
    if (grpc::Status s = SerializeResponse(response, &buffer_); !s.ok()) {
      stream_->Cancel();
      FinishLocked(s);
      return;
    }
    if (final) {
      finished_ = true;
      StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      writing_ = true;
      StartWrite(&buffer_);
    }
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  ServingEngine* const engine_;
  grpc::CallbackServerContext* const context_;
  std::shared_ptr<GenerateCall> self_;

  std::mutex mu_;
  std::shared_ptr<RequestStream> stream_;      // set once Submit succeeded
  grpc::ByteBuffer buffer_;                    // the message being written
  bool writing_ = false;                       // a StartWrite is in flight
  bool cancelled_ = false;                     // OnCancel ran
  bool finished_ = false;                      // Finish or StartWriteAndFinish was called
  std::optional<grpc::Status> pending_error_;  // finish with it after the current write
};

class ServingService final
    : public v1::Serving::WithRawCallbackMethod_Generate<
          v1::Serving::WithRawCallbackMethod_Tokenize<v1::Serving::CallbackService>> {
 public:
  ServingService(ServingEngine* engine, std::shared_ptr<const ApiKeys> api_keys)
      : engine_(engine), api_keys_(std::move(api_keys)) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override {
    auto call = std::make_shared<GenerateCall>(engine_, context);
    if (grpc::Status denied = CheckKey(*context); !denied.ok()) {
      call->Refuse(denied);
    } else {
      call->Start(*request);
    }
    return call.get();  // alive until OnDone (GenerateCall::self_)
  }

  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (grpc::Status denied = CheckKey(*context); !denied.ok()) {
      reactor->Finish(denied);
      return reactor;
    }
    if (request->request_id().empty()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request_id is empty"));
    } else if (!engine_->Abort(request->request_id())) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   "no live request with id '" + request->request_id() + "'"));
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* raw_request,
                                     grpc::ByteBuffer* raw_response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (grpc::Status denied = CheckKey(*context); !denied.ok()) {
      reactor->Finish(denied);
      return reactor;
    }
    v1::TokenizeRequest request;
    v1::TokenizeResponse response;
    absl::Status status = ParseRequest(*raw_request, &request);
    if (status.ok()) status = DoTokenize(request, &response);
    reactor->Finish(status.ok() ? SerializeResponse(response, raw_response) : ToGrpcStatus(status));
    return reactor;
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* /*request*/,
                                         v1::GetModelInfoResponse* response) override {
    if (grpc::Status denied = CheckKey(*context); !denied.ok()) {
      grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
      reactor->Finish(denied);
      return reactor;
    }
    const ModelConfig& config = engine_->config();
    response->set_model_name(std::filesystem::path(engine_->model_dir()).filename().string());
    if (response->model_name().empty()) {  // a directory given with a trailing slash
      response->set_model_name(
          std::filesystem::path(engine_->model_dir()).parent_path().filename().string());
    }
    response->set_architecture(config.architecture);
    response->set_model_type(config.model_type);
    response->set_vocab_size(config.vocab_size);
    response->set_context_length(config.max_position_embeddings);
    response->set_num_experts(config.num_experts);
    response->set_num_experts_per_token(config.top_k);
    response->set_num_layers(config.num_layers);
    response->set_hidden_size(config.hidden_size);
    response->mutable_eos_token_ids()->Add(config.eos_token_ids.begin(),
                                           config.eos_token_ids.end());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetServerStatus(grpc::CallbackServerContext* context,
                                            const v1::GetServerStatusRequest* /*request*/,
                                            v1::GetServerStatusResponse* response) override {
    if (grpc::Status denied = CheckKey(*context); !denied.ok()) {
      grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
      reactor->Finish(denied);
      return reactor;
    }
    const ServingStatus s = engine_->Status();
    response->set_running(s.running);
    response->set_waiting(s.waiting);
    response->set_kv_blocks_used(s.kv_blocks_used);
    response->set_kv_blocks_total(s.kv_blocks_total);
    response->set_kv_usage(
        s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
    response->set_draining(s.draining);
    response->set_preemptions(s.preemptions);
    response->set_steps(s.steps);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  // OK without keys, or when the call's "authorization" metadata is "Bearer KEY" with a
  // listed key; else UNAUTHENTICATED.
  grpc::Status CheckKey(const grpc::CallbackServerContext& context) const {
    if (api_keys_ == nullptr || !api_keys_->enabled()) return grpc::Status::OK;
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it != metadata.end() &&
        api_keys_->Allows(std::string_view(it->second.data(), it->second.size()))) {
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        it == metadata.end()
                            ? "this server needs an API key: send 'authorization: Bearer KEY'"
                            : "the API key is not valid");
  }

  absl::Status DoTokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse* response) {
    const Tokenizer& tokenizer = engine_->tokenizer();
    const bool add_special = !request.has_add_special_tokens() || request.add_special_tokens();
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(request.text(), add_special);
    if (!ids.ok()) return ids.status();
    response->mutable_token_ids()->Add(ids->begin(), ids->end());
    if (request.return_pieces()) {
      for (int32_t id : *ids) response->add_pieces(tokenizer.IdToToken(id).value_or(""));
    }
    return absl::OkStatus();
  }

  ServingEngine* const engine_;
  std::shared_ptr<const ApiKeys> api_keys_;  // null or empty: no key needed
};

}  // namespace

absl::StatusOr<GenerateRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                                const ServingEngine& engine,
                                                std::optional<SteadyTime> deadline) {
  const ServingLimits& limits = engine.limits();
  const int vocab = limits.vocab_size;
  const int context = limits.context_length;
  if (request.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id is longer than ", kMaxRequestIdBytes, " bytes"));
  }
  GenerateRequest out;
  out.id = request.request_id();
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) return absl::InvalidArgumentError("prompt text is empty");
      const bool add_special = !request.has_add_special_tokens() || request.add_special_tokens();
      absl::StatusOr<std::vector<int32_t>> ids =
          engine.tokenizer().Encode(request.text(), add_special);
      if (!ids.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("prompt text: ", ids.status().message()));
      }
      if (ids->empty()) return absl::InvalidArgumentError("prompt text encodes to no tokens");
      out.prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return absl::InvalidArgumentError("prompt token_ids is empty");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab) {
          return absl::InvalidArgumentError(absl::StrCat("prompt token_ids[", i, "] = ", ids[i],
                                                         " is outside the vocabulary [0, ", vocab,
                                                         ")"));
        }
      }
      out.prompt.assign(ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt is required: set text or token_ids");
  }
  const int prompt_tokens = static_cast<int>(out.prompt.size());
  if (prompt_tokens >= context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", prompt_tokens, " tokens; the context is ", context,
                     " tokens, so at most ", context - 1, " fit with one generated token"));
  }
  if (request.has_max_tokens()) {
    out.max_tokens = request.max_tokens();
    if (out.max_tokens < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens must be >= 1, got ", out.max_tokens));
    }
    if (prompt_tokens + static_cast<int64_t>(out.max_tokens) > context) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt (", prompt_tokens, " tokens) + max_tokens (", out.max_tokens,
                       ") exceeds the context of ", context, " tokens"));
    }
  } else {
    out.max_tokens = std::min(limits.default_max_tokens, context - prompt_tokens);
  }

  SamplingParams& sampling = out.sampling;
  sampling = limits.default_sampling;
  if (request.has_temperature()) {
    if (!std::isfinite(request.temperature()) || request.temperature() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("temperature must be >= 0, got ", request.temperature()));
    }
    sampling.temperature = request.temperature();
  }
  if (request.has_top_p()) {
    if (!(request.top_p() > 0 && request.top_p() <= 1)) {  // NaN fails too
      return absl::InvalidArgumentError(
          absl::StrCat("top_p must be in (0, 1], got ", request.top_p()));
    }
    sampling.top_p = request.top_p();
  }
  if (request.has_top_k()) {
    if (request.top_k() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", request.top_k()));
    }
    sampling.top_k = request.top_k();
  }
  if (request.has_seed()) sampling.seed = request.seed();
  if (request.has_self_contrast()) {
    const v1::SelfContrast& in = request.self_contrast();
    SelfContrastParams sc;
    if (in.has_alpha()) sc.alpha = in.alpha();
    if (in.has_beta()) sc.beta = in.beta();
    if (in.has_weak_rank()) sc.weak_rank = in.weak_rank();
    if (in.has_ban_eos()) sc.ban_eos = in.ban_eos();
    if (absl::Status s = sc.Validate(limits.num_routed_experts); !s.ok()) return s;
    out.self_contrast = sc;
  }
  if (request.has_routing()) {
    const v1::Routing& routing = request.routing();
    MOE_ASSIGN_OR_RETURN(
        out.routing,
        RequestedRouting(
            routing.has_top_k() ? std::optional<int64_t>(routing.top_k()) : std::nullopt,
            routing.has_top_p() ? std::optional<double>(routing.top_p()) : std::nullopt,
            limits.num_routed_experts));
  }
  if (absl::Status s = sampling.Validate(); !s.ok()) return s;

  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    }
    out.stop.push_back(request.stop(i));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    const int32_t id = request.stop_token_ids(i);
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop_token_ids[", i, "] = ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
    out.stop_token_ids.push_back(id);
  }
  out.ignore_eos = request.ignore_eos();
  out.skip_special_tokens = !request.has_skip_special_tokens() || request.skip_special_tokens();
  out.deadline = deadline;
  return out;
}

struct GrpcServer::Impl {
  Impl(ServingEngine* engine, std::shared_ptr<const ApiKeys> api_keys)
      : service(engine, std::move(api_keys)) {}

  ServingService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::once_flag shutdown_once;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServingEngine* engine,
                                                              const GrpcServerOptions& options) {
  // Process-wide switches; they take effect for servers built after them.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Links the health protocol's descriptor into the binary, so reflection can describe
  // grpc.health.v1.Health too (gRPC's own health service does not carry one).
  (void)grpc::health::v1::HealthCheckResponse::descriptor();

  auto impl = std::make_unique<Impl>(engine, options.api_keys);
  const std::string address = HostPort(options.host, options.port);
  // gRPC says only that a bind failed; the kernel says why.
  MOE_RETURN_IF_ERROR(CheckCanListen("gRPC", options.host, options.port));
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second server on the same port would then
  // listen too and answer some of this one's connections with its own model.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(tls);
  }
  builder.AddListeningPort(address, credentials, &impl->port);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.RegisterService(&impl->service);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address, " (the bind failed)"));
  }
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
  server->SetServing(true);
  return server;
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

int GrpcServer::port() const { return impl_->port; }

void GrpcServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // "" and every registered service
  health->SetServingStatus(kServingServiceName, serving);
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  std::call_once(impl_->shutdown_once, [&] {
    impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
    impl_->server->Wait();
  });
}

}  // namespace moe::server
