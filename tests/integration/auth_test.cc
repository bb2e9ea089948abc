// moe-server with API keys (--api-key, --api-key-file): both front ends refuse calls
// without a listed key and accept them with one; probes and scrapes stay open. With
// --tls-cert/--tls-key both ports speak TLS (a certificate made by openssl in the test).
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "moe/v1/serving.grpc.pb.h"
#include "tests/integration/server_process.h"

namespace moe {
namespace {

using std::chrono::seconds;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_file_ = (std::filesystem::path(::testing::TempDir()) /
                 ("auth_keys_" + std::to_string(getpid()) + ".txt"))
                    .string();
    std::ofstream(key_file_) << "# keys\nfile-key\n";
    server_ = testing::ServerProcess::Start(MOE_SERVER_BINARY,
                                            {"--api-key", "flag-key", "--api-key-file", key_file_});
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    ASSERT_TRUE(channel_->WaitForConnected(std::chrono::system_clock::now() + seconds(10)));
  }
  void TearDown() override { std::filesystem::remove(key_file_); }

  // GetModelInfo and a 2-token Generate with `key` ("" sends no metadata).
  std::pair<grpc::Status, grpc::Status> CallGrpc(const std::string& key) {
    auto stub = v1::Serving::NewStub(channel_);
    grpc::ClientContext info_context;
    info_context.set_deadline(std::chrono::system_clock::now() + seconds(30));
    if (!key.empty()) info_context.AddMetadata("authorization", "Bearer " + key);
    v1::GetModelInfoResponse info;
    const grpc::Status info_status = stub->GetModelInfo(&info_context, {}, &info);

    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(30));
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
    v1::GenerateRequest request;
    request.set_text("And the king");
    request.set_max_tokens(2);
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return {info_status, reader->Finish()};
  }

  std::string key_file_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, GrpcNeedsAListedKeyAndHealthStaysOpen) {
  for (const std::string& key : {std::string(), std::string("wrong-key")}) {
    const auto [info, generate] = CallGrpc(key);
    EXPECT_EQ(info.error_code(), grpc::StatusCode::UNAUTHENTICATED) << key;
    EXPECT_EQ(generate.error_code(), grpc::StatusCode::UNAUTHENTICATED) << key;
    EXPECT_NE(generate.error_message().find(key.empty() ? "needs an API key" : "not valid"),
              std::string::npos)
        << generate.error_message();
  }
  for (const std::string& key : {std::string("flag-key"), std::string("file-key")}) {
    const auto [info, generate] = CallGrpc(key);
    EXPECT_TRUE(info.ok()) << key << ": " << info.error_message();
    EXPECT_TRUE(generate.ok()) << key << ": " << generate.error_message();
  }
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_TRUE(health->Check(&context, {}, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(AuthTest, HttpNeedsABearerKeyExceptForProbesAndMetrics) {
  httplib::Client client("127.0.0.1", server_->http_port());
  client.set_read_timeout(30, 0);
  const std::string body = R"({"prompt": "And the king", "max_tokens": 2})";
  auto missing = client.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(missing->get_header_value("WWW-Authenticate"), "Bearer");
  const nlohmann::json error = nlohmann::json::parse(missing->body);
  EXPECT_EQ(error["error"]["code"], "invalid_api_key");
  EXPECT_NE(error["error"]["message"].get<std::string>().find("needs an API key"),
            std::string::npos);
  for (const std::string path : {"/v1/models", "/tokenize"}) {
    auto res = client.Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << path;
  }
  auto wrong =
      client.Post("/v1/completions", {{"Authorization", "Bearer nope"}}, body, "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  for (const std::string key : {"flag-key", "file-key"}) {
    auto ok = client.Post("/v1/completions", {{"Authorization", "Bearer " + key}}, body,
                          "application/json");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << key << ": " << ok->body;
  }
  for (const std::string path : {"/health", "/ready", "/metrics"}) {
    auto res = client.Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << path;
  }
}

// A self-signed certificate for 127.0.0.1 and localhost, made by the openssl CLI in the
// test's temporary directory; its path, or "" when openssl is missing or fails.
std::string MakeCertificate(const std::string& stem) {
  const std::string dir = ::testing::TempDir();
  const std::string cert = dir + "/" + stem + ".crt", key = dir + "/" + stem + ".key";
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
      " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '" +
      key + "' -out '" + cert + "' > /dev/null 2>&1";
  return std::system(command.c_str()) == 0 ? dir + "/" + stem : "";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(TlsTest, BothPortsServeTlsWithTheGivenCertificateAndRefusePlaintext) {
  const std::string stem = MakeCertificate("moe_tls_" + std::to_string(getpid()));
  ASSERT_FALSE(stem.empty()) << "openssl req failed (scripts/install_deps.sh installs openssl)";
  auto server = testing::ServerProcess::Start(
      MOE_SERVER_BINARY, {"--tls-cert", stem + ".crt", "--tls-key", stem + ".key"});
  ASSERT_NE(server, nullptr);
  const std::string pem = ReadAll(stem + ".crt");

  // gRPC: a handshake that verifies the server against the certificate, then a call.
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = pem;
  auto channel = grpc::CreateChannel(server->grpc_address(), grpc::SslCredentials(tls));
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + seconds(10)));
  auto stub = v1::Serving::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(30));
  v1::GetModelInfoResponse info;
  EXPECT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  EXPECT_GT(info.vocab_size(), 0);
  // A plaintext channel gets nowhere.
  auto plain = grpc::CreateChannel(server->grpc_address(), grpc::InsecureChannelCredentials());
  EXPECT_FALSE(plain->WaitForConnected(std::chrono::system_clock::now() + seconds(2)));

  // HTTPS, verified against the certificate.
  httplib::SSLClient https("127.0.0.1", server->http_port());
  https.set_ca_cert_path((stem + ".crt").c_str());
  https.enable_server_certificate_verification(true);
  https.set_read_timeout(30, 0);
  auto models = https.Get("/v1/models");
  ASSERT_TRUE(models) << httplib::to_string(models.error());
  EXPECT_EQ(models->status, 200);
  auto done = https.Post("/v1/completions", R"({"prompt": "And the king", "max_tokens": 2})",
                         "application/json");
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 200);
  // Plain HTTP to the TLS port is not served.
  httplib::Client http("127.0.0.1", server->http_port());
  http.set_read_timeout(5, 0);
  auto refused = http.Get("/health");
  EXPECT_TRUE(!refused || refused->status != 200);
  EXPECT_EQ(server->Stop(seconds(20)), 0);
}

TEST(TlsTest, ACertificateWithoutItsKeyOrNotPemIsAStartupError) {
  const std::string stem = MakeCertificate("moe_tls_bad_" + std::to_string(getpid()));
  ASSERT_FALSE(stem.empty());
  EXPECT_EQ(
      testing::ServerProcess::Start(MOE_SERVER_BINARY, {"--tls-cert", stem + ".crt"}, seconds(10)),
      nullptr);
  const std::string junk = stem + ".junk";
  std::ofstream(junk) << "not a certificate\n";
  EXPECT_EQ(testing::ServerProcess::Start(
                MOE_SERVER_BINARY, {"--tls-cert", junk, "--tls-key", stem + ".key"}, seconds(10)),
            nullptr);
}

TEST(AuthStartupTest, AKeyFileWithNoKeyIsAStartupError) {
  const std::string empty =
      (std::filesystem::path(::testing::TempDir()) / "auth_empty_keys.txt").string();
  std::ofstream(empty) << "# none yet\n";
  EXPECT_EQ(testing::ServerProcess::Start(MOE_SERVER_BINARY, {"--api-key-file", empty},
                                          std::chrono::seconds(10)),
            nullptr);
}

}  // namespace
}  // namespace moe
