// End-to-end tests of moe-server over gRPC (label e2e): the real binary on 127.0.0.1 with
// an ephemeral port and the default model (models/default: Qwen3-MoE, vocab 4096,
// context 1024). Every RPC has a deadline so a hung server fails the test instead of
// hanging it.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.pb.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "moe/v1/serving.grpc.pb.h"
#include "tests/integration/server_process.h"

namespace moe {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ServerProcess;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

constexpr int kVocab = 4096;
constexpr int kContext = 1024;
constexpr auto kRpcDeadline = seconds(30);

void SetDeadline(grpc::ClientContext* context, milliseconds timeout = kRpcDeadline) {
  context->set_deadline(std::chrono::system_clock::now() + timeout);
}

// Everything one Generate call returned.
struct GenerateResult {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;
  std::string request_id;
  int messages = 0;
  int finish_messages = 0;
  v1::Finish finish;
};

v1::GenerateRequest GreedyRequest(const std::string& prompt, int max_tokens) {
  v1::GenerateRequest request;
  request.set_text(prompt);
  request.set_max_tokens(max_tokens);
  request.set_temperature(0.f);
  request.set_ignore_eos(true);
  return request;
}

GenerateResult Collect(grpc::ClientReader<v1::GenerateResponse>& reader) {
  GenerateResult result;
  v1::GenerateResponse response;
  while (reader.Read(&response)) {
    ++result.messages;
    result.ids.insert(result.ids.end(), response.token_ids().begin(), response.token_ids().end());
    result.text += response.text();
    result.request_id = response.request_id();
    if (response.has_finish()) {
      ++result.finish_messages;
      result.finish = response.finish();
    }
  }
  result.status = reader.Finish();
  return result;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(MOE_SERVER_BINARY);
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    ASSERT_TRUE(channel_->WaitForConnected(std::chrono::system_clock::now() + seconds(10)));
    stub_ = v1::Serving::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  GenerateResult Generate(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto reader = stub_->Generate(&context, request);
    return Collect(*reader);
  }

  // Runs the requests at once (released together), each on its own thread.
  std::vector<GenerateResult> GenerateConcurrently(
      const std::vector<v1::GenerateRequest>& requests) {
    const int n = static_cast<int>(requests.size());
    std::vector<GenerateResult> results(n);
    std::latch start(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = Generate(requests[i]);
      });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  // Starts the request, cancels the call after its first message and expects CANCELLED.
  void CancelAfterFirstMessage(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));
    // The status is published after the step that streamed the first message: poll it.
    int64_t used = 0;
    for (int i = 0; i < 200 && used == 0; ++i) {
      used = ServerStatus().kv_blocks_used();
      if (used == 0) std::this_thread::sleep_for(milliseconds(10));
    }
    EXPECT_GT(used, 0);
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }

  v1::GetServerStatusResponse ServerStatus() {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetServerStatusResponse response;
    EXPECT_TRUE(stub_->GetServerStatus(&context, {}, &response).ok());
    return response;
  }

  // Polls GetServerStatus until no request is running or waiting (up to 10 s).
  bool WaitForNoRequests() {
    const auto end = std::chrono::steady_clock::now() + seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      const v1::GetServerStatusResponse s = ServerStatus();
      if (s.running() == 0 && s.waiting() == 0 && s.kv_blocks_used() == 0) return true;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  grpc::Status HealthCheck(const std::string& service, HealthStatus* response) {
    grpc::ClientContext context;
    SetDeadline(&context, seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    return health_->Check(&context, request, response);
  }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Serving::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TEST_F(GrpcServerTest, GreedyGenerateStreamsTextAndAFinalMessageWithUsage) {
  grpc::ClientContext tokenize_context;
  SetDeadline(&tokenize_context);
  v1::TokenizeRequest tokenize;
  tokenize.set_text("Once upon a time");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&tokenize_context, tokenize, &tokens).ok());
  ASSERT_GT(tokens.token_ids_size(), 0);

  const GenerateResult r = Generate(GreedyRequest("Once upon a time", 16));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.finish_messages, 1);
  EXPECT_EQ(r.finish.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.ids.size(), 16u);
  EXPECT_EQ(r.finish.usage().completion_tokens(), 16);
  EXPECT_EQ(r.finish.usage().prompt_tokens(), tokens.token_ids_size());
  EXPECT_FALSE(r.text.empty());
  EXPECT_FALSE(r.request_id.empty());
  EXPECT_GE(r.finish.queue_seconds(), 0);
  EXPECT_GE(r.finish.ttft_seconds(), r.finish.queue_seconds());
  EXPECT_LT(r.finish.ttft_seconds(), 30);
  for (int32_t id : r.ids) EXPECT_TRUE(id >= 0 && id < kVocab) << id;
  // Tokens stream before the final message. The server folds into one message whatever
  // is queued when its previous write completes, so 16 tokens of this small model may all
  // arrive at once: a long request shows the streaming.
  const GenerateResult long_run = Generate(GreedyRequest("Once upon a time", 400));
  ASSERT_TRUE(long_run.status.ok()) << long_run.status.error_message();
  EXPECT_GE(long_run.messages, 2);
  EXPECT_EQ(long_run.ids.size(), 400u);

  // The same prompt as token ids gives the same greedy continuation.
  v1::GenerateRequest by_ids = GreedyRequest("", 16);
  by_ids.mutable_token_ids()->mutable_ids()->Assign(tokens.token_ids().begin(),
                                                    tokens.token_ids().end());
  const GenerateResult r2 = Generate(by_ids);
  ASSERT_TRUE(r2.status.ok()) << r2.status.error_message();
  EXPECT_EQ(r2.ids, r.ids);
  EXPECT_EQ(r2.text, r.text);
}

TEST_F(GrpcServerTest, StopStringEndsTheTextBeforeTheMatch) {
  const GenerateResult full = Generate(GreedyRequest("The meaning of life is", 24));
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  // A stop string from the middle of the greedy text.
  const size_t half = full.text.size() / 2;
  ASSERT_GE(full.text.size(), 6u);
  const std::string stop = full.text.substr(half, 2);
  const size_t first = full.text.find(stop);
  v1::GenerateRequest request = GreedyRequest("The meaning of life is", 24);
  request.add_stop(stop);
  const GenerateResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.finish.reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.finish.matched_stop(), stop);
  EXPECT_EQ(r.text, full.text.substr(0, first));
  EXPECT_LT(r.finish.usage().completion_tokens(), 24);
}

TEST_F(GrpcServerTest, ModelInfoDescribesTheDefaultModel) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "default");
  EXPECT_EQ(info.architecture(), "Qwen3MoeForCausalLM");
  EXPECT_EQ(info.vocab_size(), kVocab);
  EXPECT_EQ(info.context_length(), kContext);
  EXPECT_EQ(info.num_experts(), 8);
  EXPECT_EQ(info.num_experts_per_token(), 2);
  EXPECT_EQ(info.num_layers(), 4);
}

TEST_F(GrpcServerTest, TokenizeReturnsIdsAndPieces) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::TokenizeRequest request;
  request.set_text("Hello world, hello moe");
  request.set_return_pieces(true);
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub_->Tokenize(&context, request, &response).ok());
  ASSERT_GT(response.token_ids_size(), 1);
  ASSERT_EQ(response.pieces_size(), response.token_ids_size());
  for (const std::string& piece : response.pieces()) EXPECT_FALSE(piece.empty());
}

TEST_F(GrpcServerTest, HealthIsServing) {
  HealthStatus response;
  ASSERT_TRUE(HealthCheck("", &response).ok());
  EXPECT_EQ(response.status(), HealthStatus::SERVING);
  ASSERT_TRUE(HealthCheck("moe.v1.Serving", &response).ok());
  EXPECT_EQ(response.status(), HealthStatus::SERVING);
  EXPECT_EQ(HealthCheck("no.such.Service", &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Runs `command` through the shell; its stdout and stderr together, and its exit code.
std::pair<std::string, int> RunCommand(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {"popen failed", -1};
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {output, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Whether a socket that itself sets SO_REUSEPORT can bind 127.0.0.1:port. The kernel
// allows it only when every socket already bound there set SO_REUSEPORT too.
bool CanBindWithReusePort(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof(yes));
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return bound;
}

TEST_F(GrpcServerTest, PortsAreExclusiveAndASecondServerSaysWhichPortAndWhy) {
  // Neither listening socket lets another SO_REUSEPORT socket share its port.
  EXPECT_FALSE(CanBindWithReusePort(server_->grpc_port()));
  EXPECT_FALSE(CanBindWithReusePort(server_->http_port()));

  const std::string binary = MOE_SERVER_BINARY;
  for (const bool grpc_taken : {true, false}) {
    const int port = grpc_taken ? server_->grpc_port() : server_->http_port();
    const std::string ports = grpc_taken ? "--grpc-port " + std::to_string(port) + " --http-port 0"
                                         : "--grpc-port 0 --http-port " + std::to_string(port);
    const auto [output, code] = RunCommand(binary + " --host 127.0.0.1 " + ports);
    EXPECT_EQ(code, 1) << output;
    EXPECT_THAT(output, ::testing::HasSubstr(
                            std::string("cannot listen for ") + (grpc_taken ? "gRPC" : "HTTP") +
                            " on 127.0.0.1:" + std::to_string(port) +
                            ": Address already in use (another process holds the port)"));
    // It fails before loading the model, and announces nothing.
    EXPECT_THAT(output, ::testing::Not(::testing::HasSubstr("listening on")));
    EXPECT_THAT(output, ::testing::Not(::testing::HasSubstr("loaded")));
  }
  // The first server still answers.
  HealthStatus response;
  ASSERT_TRUE(HealthCheck("", &response).ok());
  EXPECT_EQ(response.status(), HealthStatus::SERVING);
}

TEST_F(GrpcServerTest, UnsetSamplingFieldsTakeTheGenerationConfigDefaults) {
  // models/default/generation_config.json: temperature 0.8, top_p 0.95.
  auto seeded = [](std::optional<float> temperature, std::optional<float> top_p) {
    v1::GenerateRequest request;
    request.set_text("And the king said unto");
    request.set_max_tokens(48);
    request.set_ignore_eos(true);
    request.set_seed(11);
    if (temperature) request.set_temperature(*temperature);
    if (top_p) request.set_top_p(*top_p);
    return request;
  };
  const GenerateResult unset = Generate(seeded(std::nullopt, std::nullopt));
  const GenerateResult as_config = Generate(seeded(0.8f, 0.95f));
  const GenerateResult plain = Generate(seeded(1.f, 1.f));
  ASSERT_TRUE(unset.status.ok()) << unset.status.error_message();
  EXPECT_EQ(unset.ids.size(), 48u);
  EXPECT_EQ(unset.ids, as_config.ids);
  EXPECT_NE(unset.ids, plain.ids);
}

TEST_F(GrpcServerTest, ReflectionListsAndDescribesTheServices) {
  namespace reflection = grpc::reflection::v1alpha;
  auto stub = reflection::ServerReflection::NewStub(channel_);
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest request;
  reflection::ServerReflectionResponse response;

  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> services;
  for (const auto& s : response.list_services_response().service()) services.push_back(s.name());
  EXPECT_THAT(services, ::testing::IsSupersetOf({"moe.v1.Serving", "grpc.health.v1.Health"}));

  for (const std::string symbol : {"moe.v1.Serving", "grpc.health.v1.Health"}) {
    SCOPED_TRACE(symbol);
    request.set_file_containing_symbol(symbol);
    ASSERT_TRUE(stream->Write(request));
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_TRUE(response.has_file_descriptor_response())
        << response.error_response().error_message();
    bool found = false;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(bytes));
      for (const auto& service : file.service()) {
        found |= file.package() + "." + service.name() == symbol;
      }
    }
    EXPECT_TRUE(found);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(GrpcServerTest, SixtyFourConcurrentStreamsComplete) {
  constexpr int kStreams = 64;
  std::vector<v1::GenerateRequest> requests(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    v1::GenerateRequest& request = requests[i];
    request.set_request_id("stream-" + std::to_string(i));
    // Half token-id prompts of known length, half text; half greedy, half sampled.
    if (i % 2 == 0) {
      for (int j = 0; j <= i % 7; ++j) request.mutable_token_ids()->add_ids(100 + 37 * i + j);
    } else {
      request.set_text("Request number " + std::to_string(i) + " says");
    }
    request.set_max_tokens(8 + (i % 8) * 4);
    request.set_ignore_eos(true);
    if (i % 4 < 2) {
      request.set_temperature(0.f);
    } else {
      request.set_temperature(0.8f);
      request.set_top_p(0.9f);
      request.set_seed(i);
    }
  }
  std::vector<GenerateResult> results(kStreams);
  std::latch start(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = Generate(requests[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    const GenerateResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.request_id, requests[i].request_id());
    EXPECT_EQ(r.finish_messages, 1);
    EXPECT_EQ(r.finish.reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(static_cast<int>(r.ids.size()), requests[i].max_tokens());
    EXPECT_EQ(r.finish.usage().completion_tokens(), requests[i].max_tokens());
    if (i % 2 == 0) {
      EXPECT_EQ(r.finish.usage().prompt_tokens(), i % 7 + 1);
    }
  }
  EXPECT_TRUE(WaitForNoRequests());
}

// Threads of the server process, from /proc/<pid>/status.
int ProcessThreads(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// The callback API serves streams without a thread each: 1,000 Generate streams open at
// once (the engine runs 64 and queues the rest), driven by one client thread through a
// completion queue, while the server keeps a few dozen threads.
TEST_F(GrpcServerTest, AThousandConcurrentStreamsNeedNoThreadEach) {
  constexpr int kStreams = 1000;
  constexpr int kTokens = 4;
  struct Call {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientAsyncReader<v1::GenerateResponse>> reader;
    v1::GenerateResponse response;
    grpc::Status status;
    int tokens = 0;
    bool finish_seen = false;
    bool reading = false;  // a Read is in flight (else the next event is Finish)
  };
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Call>> calls;
  const int threads_before = ProcessThreads(server_->pid());
  for (int i = 0; i < kStreams; ++i) {
    auto call = std::make_unique<Call>();
    SetDeadline(&call->context, seconds(60));
    call->reader =
        stub_->AsyncGenerate(&call->context, GreedyRequest("Stream " + std::to_string(i), kTokens),
                             &cq, reinterpret_cast<void*>(static_cast<intptr_t>(i)));
    calls.push_back(std::move(call));
  }
  // Events: a call started or a Read completed -> Read again; a Read failed -> Finish;
  // Finish completed -> done. The tag is the call index; `reading` tells which it was.
  int started = 0, done = 0, max_threads = 0, live_at_peak = 0;
  std::vector<bool> finishing(kStreams, false);
  void* tag = nullptr;
  bool ok = false;
  while (done < kStreams && cq.Next(&tag, &ok)) {
    const int i = static_cast<int>(reinterpret_cast<intptr_t>(tag));
    Call& call = *calls[i];
    if (finishing[i]) {
      ++done;
      continue;
    }
    if (call.reading && ok) {
      call.tokens += call.response.token_ids_size();
      call.finish_seen |= call.response.has_finish();
    } else if (!call.reading) {
      if (++started == kStreams) {
        max_threads = ProcessThreads(server_->pid());
        const v1::GetServerStatusResponse st = ServerStatus();
        live_at_peak = st.running() + st.waiting();
      }
    }
    if (ok) {
      call.reading = true;
      call.reader->Read(&call.response, tag);
    } else {
      finishing[i] = true;
      call.reader->Finish(&call.status, tag);
    }
  }
  ASSERT_EQ(done, kStreams);
  int complete = 0;
  for (const auto& call : calls) {
    complete += call->status.ok() && call->tokens == kTokens && call->finish_seen;
  }
  EXPECT_EQ(complete, kStreams);
  // gRPC's own pollers and executors, the engine thread, the kernels' thread pool and httplib's
  // workers: a fixed set, far from one per stream.
  std::fprintf(stderr, "server threads: %d before, %d with %d requests live\n", threads_before,
               max_threads, live_at_peak);
  EXPECT_GT(live_at_peak, kStreams / 2) << "the streams were meant to be open at once";
  EXPECT_GT(max_threads, 0);
  EXPECT_LT(max_threads, threads_before + 100)
      << "server threads before: " << threads_before << ", with 1000 streams: " << max_threads;
  EXPECT_TRUE(WaitForNoRequests());
}

TEST_F(GrpcServerTest, GreedyOutputIsTheSameAloneAndWithThirtyOneOthers) {
  const v1::GenerateRequest target = GreedyRequest("In a quiet village by the sea", 32);
  const GenerateResult alone = Generate(target);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  ASSERT_EQ(alone.ids.size(), 32u);

  constexpr int kOthers = 31;
  std::vector<GenerateResult> results(kOthers + 1);
  std::latch start(kOthers + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i <= kOthers; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest request = target;
      if (i > 0) {
        // Prompts of different lengths, so prefill chunks and decodes share steps.
        std::string prompt = "Other prompt " + std::to_string(i);
        for (int j = 0; j < i % 5; ++j) prompt += " with more words in it";
        request = GreedyRequest(prompt, 48);
        if (i % 2 == 1) {
          request.set_temperature(1.f);
          request.set_seed(1000 + i);
        }
      }
      start.arrive_and_wait();
      results[i] = Generate(request);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const GenerateResult& r : results) ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(results[0].ids, alone.ids);
  EXPECT_EQ(results[0].text, alone.text);
}

// Per-request routing over gRPC: served and streamed, the same alone and beside seven
// other requests (plain and routed), different from the model's own routing, and a
// cancelled routed request frees its KV blocks.
TEST_F(GrpcServerTest, RoutingOverridesAreServedBatchedAndCancelled) {
  v1::GenerateRequest all = GreedyRequest("In a quiet village by the sea", 24);
  all.mutable_routing()->set_top_k(8);
  v1::GenerateRequest nucleus = GreedyRequest("In a quiet village by the sea", 24);
  nucleus.mutable_routing()->set_top_p(0.4f);
  const GenerateResult plain = Generate(GreedyRequest("In a quiet village by the sea", 24));
  const GenerateResult all_alone = Generate(all);
  const GenerateResult nucleus_alone = Generate(nucleus);
  for (const GenerateResult* r : {&plain, &all_alone, &nucleus_alone}) {
    ASSERT_TRUE(r->status.ok()) << r->status.error_message();
    ASSERT_EQ(r->ids.size(), 24u);
    EXPECT_EQ(r->finish_messages, 1);
  }
  EXPECT_TRUE(all_alone.ids != plain.ids || nucleus_alone.ids != plain.ids)
      << "neither override changed the continuation";

  std::vector<v1::GenerateRequest> requests = {all, nucleus};
  for (int i = 2; i < 8; ++i) {
    requests.push_back(GreedyRequest("Another prompt number " + std::to_string(i), 16 + i));
    if (i % 2 == 0) requests.back().mutable_routing()->set_top_k(1 + i % 8);
  }
  const std::vector<GenerateResult> results = GenerateConcurrently(requests);
  for (const GenerateResult& r : results) ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(results[0].ids, all_alone.ids);
  EXPECT_EQ(results[1].ids, nucleus_alone.ids);

  v1::GenerateRequest long_one = GreedyRequest("Cancel me", kContext - 16);
  long_one.mutable_routing()->set_top_p(0.9f);
  CancelAfterFirstMessage(long_one);
  EXPECT_TRUE(WaitForNoRequests());
}

// SCMoE over gRPC: a pair is served and streamed with the prompt counted once, gives the
// same tokens alone and beside seven others (plain, routed and other pairs), differs from
// plain greedy, and a cancelled pair frees both sequences' KV blocks.
TEST_F(GrpcServerTest, SelfContrastPairsAreServedBatchedAndCancelled) {
  const std::string prompt = "In a quiet village by the sea";
  v1::GenerateRequest pair = GreedyRequest(prompt, 24);
  pair.mutable_self_contrast()->set_beta(0.9f);
  pair.mutable_self_contrast()->set_weak_rank(3);
  const GenerateResult plain = Generate(GreedyRequest(prompt, 24));
  const GenerateResult alone = Generate(pair);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  ASSERT_EQ(alone.ids.size(), 24u);
  EXPECT_GT(alone.messages, 1) << "the pair's tokens were not streamed";
  EXPECT_EQ(alone.finish.usage().prompt_tokens(), plain.finish.usage().prompt_tokens());
  EXPECT_EQ(alone.finish.usage().completion_tokens(), 24);
  EXPECT_NE(alone.ids, plain.ids) << "self-contrast changed nothing";

  std::vector<v1::GenerateRequest> requests = {pair};
  for (int i = 1; i < 8; ++i) {
    requests.push_back(GreedyRequest("Another prompt number " + std::to_string(i), 12 + i));
    if (i % 3 == 1) requests.back().mutable_self_contrast()->set_weak_rank(1 + i % 8);
    if (i % 3 == 2) requests.back().mutable_routing()->set_top_p(0.5f);
  }
  const std::vector<GenerateResult> results = GenerateConcurrently(requests);
  for (const GenerateResult& r : results) ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(results[0].ids, alone.ids);
  EXPECT_EQ(results[0].text, alone.text);

  v1::GenerateRequest long_one = GreedyRequest("Cancel me", kContext / 2);
  long_one.mutable_self_contrast();  // the defaults
  CancelAfterFirstMessage(long_one);
  EXPECT_TRUE(WaitForNoRequests()) << "the cancelled pair left KV blocks behind";
}

TEST_F(GrpcServerTest, ClientCancellationFreesTheRequest) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto reader = stub_->Generate(&context, GreedyRequest("Cancel me", kContext - 16));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_GE(ServerStatus().running() + ServerStatus().waiting(), 1);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForNoRequests());
  // The server goes on serving.
  const GenerateResult next = Generate(GreedyRequest("Next", 4));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
}

TEST_F(GrpcServerTest, DeadlineEndsTheRequest) {
  grpc::ClientContext context;
  // 1008 tokens take about 170 ms at the default model's 5,800 tok/s on the 2-core EPYC
  // (300 ms was not always enough to cut the request short).
  SetDeadline(&context, milliseconds(50));
  auto reader = stub_->Generate(&context, GreedyRequest("Too slow", kContext - 16));
  const GenerateResult r = Collect(*reader);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << r.ids.size() << " tokens, finish " << r.finish.ShortDebugString();
  EXPECT_TRUE(WaitForNoRequests());
}

TEST_F(GrpcServerTest, AbortByIdEndsTheStreamWithAbort) {
  v1::GenerateRequest request = GreedyRequest("Abort me", kContext - 16);
  request.set_request_id("abort-me");
  grpc::ClientContext context;
  SetDeadline(&context);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  EXPECT_EQ(first.request_id(), "abort-me");

  // The id is live: a second request with it is refused.
  const GenerateResult duplicate = Generate(request);
  EXPECT_EQ(duplicate.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  {
    grpc::ClientContext abort_context;
    SetDeadline(&abort_context);
    v1::AbortRequest abort;
    abort.set_request_id("abort-me");
    v1::AbortResponse abort_response;
    const grpc::Status s = stub_->Abort(&abort_context, abort, &abort_response);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  GenerateResult rest = Collect(*reader);
  ASSERT_TRUE(rest.status.ok()) << rest.status.error_message();
  EXPECT_EQ(rest.finish_messages, 1);
  EXPECT_EQ(rest.finish.reason(), v1::FINISH_REASON_ABORT);
  EXPECT_LT(rest.finish.usage().completion_tokens(), kContext - 16);
  EXPECT_TRUE(WaitForNoRequests());

  grpc::ClientContext unknown_context;
  SetDeadline(&unknown_context);
  v1::AbortRequest unknown;
  unknown.set_request_id("abort-me");  // ended: no longer live
  v1::AbortResponse unknown_response;
  EXPECT_EQ(stub_->Abort(&unknown_context, unknown, &unknown_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServerTest, EveryBadInputIsRefusedAndTheServerKeepsServing) {
  struct Case {
    std::string name;
    v1::GenerateRequest request;
    grpc::StatusCode code;
  };
  auto greedy = [] { return GreedyRequest("Hello", 4); };
  std::vector<Case> cases;
  auto add = [&](std::string name, v1::GenerateRequest request,
                 grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
    cases.push_back({std::move(name), std::move(request), code});
  };
  {
    v1::GenerateRequest r = greedy();
    r.set_text("");
    add("empty prompt text", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.clear_prompt();
    add("no prompt", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.mutable_token_ids();
    add("empty token_ids", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.mutable_token_ids()->add_ids(1);
    r.mutable_token_ids()->add_ids(kVocab);
    add("token id == vocab size", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.mutable_token_ids()->add_ids(-1);
    add("negative token id", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_text("caf\xc3 \xff\xfe invalid");
    add("invalid UTF-8 text", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_temperature(-0.5f);
    add("temperature < 0", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_top_p(0.f);
    add("top_p 0", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_top_p(1.5f);
    add("top_p 1.5", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_top_k(-1);
    add("top_k < 0", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_max_tokens(0);
    add("max_tokens 0", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_max_tokens(-3);
    add("max_tokens < 0", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.set_max_tokens(kContext + 1);
    add("max_tokens past the context", r);
  }
  {
    v1::GenerateRequest r = greedy();
    for (int i = 0; i < kContext - 8; ++i) r.mutable_token_ids()->add_ids(100 + i % 50);
    r.set_max_tokens(16);
    add("prompt + max_tokens past the context", r);
  }
  {
    v1::GenerateRequest r = greedy();
    for (int i = 0; i < kContext + 10; ++i) r.mutable_token_ids()->add_ids(100 + i % 50);
    add("prompt longer than the context", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.add_stop("");
    add("empty stop string", r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.add_stop_token_ids(kVocab + 5);
    add("stop token id outside the vocabulary", r);
  }
  for (int top_k : {0, -1, 9}) {  // the default model has 8 routed experts
    v1::GenerateRequest r = greedy();
    r.mutable_routing()->set_top_k(top_k);
    add("routing.top_k " + std::to_string(top_k), r);
  }
  for (float top_p : {0.f, -0.5f, 1.5f, std::nanf("")}) {
    v1::GenerateRequest r = greedy();
    r.mutable_routing()->set_top_p(top_p);
    add("routing.top_p " + std::to_string(top_p), r);
  }
  {
    v1::GenerateRequest r = greedy();
    r.mutable_routing();  // present with neither rule
    add("empty routing", r);
  }
  for (float alpha : {0.f, -0.1f, 1.5f, std::nanf("")}) {
    v1::GenerateRequest r = greedy();
    r.mutable_self_contrast()->set_alpha(alpha);
    add("self_contrast.alpha " + std::to_string(alpha), r);
  }
  for (float beta : {-0.5f, std::nanf(""), INFINITY}) {
    v1::GenerateRequest r = greedy();
    r.mutable_self_contrast()->set_beta(beta);
    add("self_contrast.beta " + std::to_string(beta), r);
  }
  for (int rank : {0, -2, 9}) {
    v1::GenerateRequest r = greedy();
    r.mutable_self_contrast()->set_weak_rank(rank);
    add("self_contrast.weak_rank " + std::to_string(rank), r);
  }

  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const GenerateResult bad = Generate(c.request);
    EXPECT_EQ(bad.status.error_code(), c.code) << bad.status.error_message();
    EXPECT_FALSE(bad.status.error_message().empty());
    EXPECT_EQ(bad.messages, 0);
    const GenerateResult good = Generate(GreedyRequest("Still serving?", 3));
    ASSERT_TRUE(good.status.ok()) << good.status.error_message();
    EXPECT_EQ(good.ids.size(), 3u);
  }

  // Tokenize refuses invalid UTF-8 too.
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::TokenizeRequest tokenize;
  tokenize.set_text("\xff\xfe");
  v1::TokenizeResponse tokens;
  EXPECT_EQ(stub_->Tokenize(&context, tokenize, &tokens).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(WaitForNoRequests());
}

TEST_F(GrpcServerTest, SigtermLetsTheRunningRequestFinishAndExitsZero) {
  const int kMaxTokens = kContext - 16;
  grpc::ClientContext context;
  SetDeadline(&context);
  auto reader = stub_->Generate(&context, GreedyRequest("Drain", kMaxTokens));
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);

  // Draining: health turns NOT_SERVING and new requests are refused with UNAVAILABLE,
  // while the running request goes on.
  HealthStatus health;
  const auto end = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < end) {
    ASSERT_TRUE(HealthCheck("moe.v1.Serving", &health).ok());
    if (health.status() == HealthStatus::NOT_SERVING) break;
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(health.status(), HealthStatus::NOT_SERVING);
  ASSERT_TRUE(HealthCheck("", &health).ok());
  EXPECT_EQ(health.status(), HealthStatus::NOT_SERVING);
  EXPECT_EQ(Generate(GreedyRequest("Too late", 2)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);

  GenerateResult rest = Collect(*reader);
  ASSERT_TRUE(rest.status.ok()) << rest.status.error_message();
  EXPECT_EQ(rest.finish.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(rest.finish.usage().completion_tokens(), kMaxTokens);
  EXPECT_EQ(static_cast<int>(rest.ids.size()) + first.token_ids_size(), kMaxTokens);
  EXPECT_EQ(server_->Stop(seconds(20)), 0);
}

}  // namespace
}  // namespace moe
