// Peak memory of moe-server serving a bf16 checkpoint in bf16 (issue 9): at most 1.15x the
// checkpoint's tensor bytes plus the KV pool, with the weights never widened to fp32. The
// test writes a 226 MB random bf16 checkpoint of the moe-small shape (Mixtral layout,
// hidden 512, 8 layers, 8 experts, intermediate 1024) shard by shard, starts the real
// moe-server on it, and reads the server's peak resident set (VmHWM) from
// /proc/<pid>/status itself, besides checking the server's own startup figure and metric.
#include <signal.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "tests/integration/server_process.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

constexpr int kHidden = 512, kLayers = 8, kExperts = 8, kInter = 1024, kVocab = 4096;
constexpr int kHeads = 8, kKvHeads = 4, kHeadDim = kHidden / kHeads;
constexpr int64_t kKvPoolBytes = 16 << 20;

// Random bf16 values of about N(0, 0.02) from a 64-bit LCG; norms are 1.
TensorToWrite Random(std::string name, std::vector<int64_t> shape, uint64_t seed) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = DType::kBF16;
  t.shape = std::move(shape);
  t.fill = [seed](std::byte* dst, size_t offset, size_t n) {
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + offset;
    for (size_t i = 0; i + 1 < n; i += 2) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const float u = static_cast<float>(state >> 40) * (1.f / 16777216.f) - 0.5f;
      const float f = u * 0.07f;
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t h = static_cast<uint16_t>(bits >> 16);
      std::memcpy(dst + i, &h, 2);
    }
  };
  return t;
}

TensorToWrite Ones(std::string name, int64_t n) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = DType::kBF16;
  t.shape = {n};
  t.fill = [](std::byte* dst, size_t, size_t bytes) {
    for (size_t i = 0; i + 1 < bytes; i += 2) {
      const uint16_t one = 0x3F80;
      std::memcpy(dst + i, &one, 2);
    }
  };
  return t;
}

int64_t Bytes(const TensorToWrite& t) {
  int64_t n = 2;
  for (int64_t d : t.shape) n *= d;
  return n;
}

// Writes the checkpoint (two shards and an index) and returns its tensor bytes.
int64_t WriteCheckpoint(const fs::path& dir) {
  std::vector<std::vector<TensorToWrite>> shards(2);
  uint64_t seed = 1;
  shards[0].push_back(Random("model.embed_tokens.weight", {kVocab, kHidden}, seed++));
  for (int l = 0; l < kLayers; ++l) {
    std::vector<TensorToWrite>& s = shards[l < kLayers / 2 ? 0 : 1];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back(Ones(p + "input_layernorm.weight", kHidden));
    s.push_back(Ones(p + "post_attention_layernorm.weight", kHidden));
    s.push_back(Random(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, seed++));
    s.push_back(Random(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, seed++));
    s.push_back(Random(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, seed++));
    s.push_back(Random(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, seed++));
    s.push_back(Random(p + "block_sparse_moe.gate.weight", {kExperts, kHidden}, seed++));
    for (int e = 0; e < kExperts; ++e) {
      const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      s.push_back(Random(x + "w1.weight", {kInter, kHidden}, seed++));
      s.push_back(Random(x + "w3.weight", {kInter, kHidden}, seed++));
      s.push_back(Random(x + "w2.weight", {kHidden, kInter}, seed++));
    }
  }
  shards[1].push_back(Ones("model.norm.weight", kHidden));
  shards[1].push_back(Random("lm_head.weight", {kVocab, kHidden}, seed++));
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total = 0;
  for (int i = 0; i < 2; ++i) {
    const std::string file = "model-0000" + std::to_string(i + 1) + "-of-00002.safetensors";
    EXPECT_TRUE(WriteSafetensors((dir / file).string(), shards[i]).ok());
    for (const TensorToWrite& t : shards[i]) {
      weight_map[t.name] = file;
      total += Bytes(t);
    }
  }
  std::ofstream(dir / "model.safetensors.index.json")
      << nlohmann::json{{"weight_map", weight_map}}.dump();
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"architectures", {"MixtralForCausalLM"}},
      {"model_type", "mixtral"},
      {"vocab_size", kVocab},
      {"hidden_size", kHidden},
      {"intermediate_size", kInter},
      {"num_hidden_layers", kLayers},
      {"num_attention_heads", kHeads},
      {"num_key_value_heads", kKvHeads},
      {"num_local_experts", kExperts},
      {"num_experts_per_tok", 2},
      {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 1e6},
      {"tie_word_embeddings", false},
      {"eos_token_id", 0},
      {"torch_dtype", "bfloat16"}}.dump(2);
  const fs::path tokenizer = fs::path(MOE_SOURCE_DIR) / "models/default";
  fs::copy(tokenizer / "tokenizer.json", dir / "tokenizer.json");
  fs::copy(tokenizer / "tokenizer_config.json", dir / "tokenizer_config.json");
  return total;
}

int64_t VmHwmBytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

TEST(MemoryTest, Bf16CheckpointServedInBf16PeaksBelow115PercentOfItsTensorsPlusKv) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("moe_small_bf16_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int64_t tensor_bytes = WriteCheckpoint(dir);
  ASSERT_GE(tensor_bytes, 200'000'000) << "the issue asks for a checkpoint of at least 200 MB";

  // On the CPU (also where a GPU is): the bound is of host memory holding the weights.
  auto server =
      testing::ServerProcess::Start(MOE_SERVER_BINARY,
                                    {"--model", dir.string(), "--dtype", "auto", "--device", "cpu",
                                     "--kv-cache-bytes", std::to_string(kKvPoolBytes)},
                                    std::chrono::seconds(120));
  ASSERT_NE(server, nullptr);
  const int64_t hwm = VmHwmBytes(server->pid());
  const double bound = 1.15 * static_cast<double>(tensor_bytes + kKvPoolBytes);
  EXPECT_GT(hwm, tensor_bytes) << "the weights are resident";
  EXPECT_LE(static_cast<double>(hwm), bound) << "peak RSS " << hwm << " bytes against 1.15 x ("
                                             << tensor_bytes << " + " << kKvPoolBytes << ")";
  std::printf("peak RSS %.1f MiB = %.3fx (checkpoint tensors %.1f MiB + KV pool %.1f MiB)\n",
              hwm / 1048576.0, static_cast<double>(hwm) / (tensor_bytes + kKvPoolBytes),
              tensor_bytes / 1048576.0, kKvPoolBytes / 1048576.0);

  // The server's own figures: bf16 weights, their bytes, and the peak it saw.
  httplib::Client client("127.0.0.1", server->http_port());
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("weight_dtype=\"bfloat16\"} 1"));
  // Resident weights: the matrices in bf16 (the 8-row routers padded to 16 rows), the 17
  // norms' 512 values in fp32.
  const int64_t norms = (2 * kLayers + 1) * kHidden;
  const int64_t resident = tensor_bytes - 2 * norms + 4 * norms + kLayers * 8 * kHidden * 2;
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("moe_weight_bytes{placement=\"resident\"} " +
                                                  std::to_string(resident)));
  EXPECT_THAT(metrics->body, ::testing::ContainsRegex("moe_peak_rss_bytes [1-9]"));
  EXPECT_EQ(server->Stop(std::chrono::seconds(10)), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
