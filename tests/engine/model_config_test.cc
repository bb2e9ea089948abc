#include "engine/model_config.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace moe {
namespace {

using testing::ElementsAre;
using testing::HasSubstr;

class ModelConfigTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) /
           ("cfg_" + std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  static nlohmann::json Qwen2() {
    return {{"architectures", {"Qwen2MoeForCausalLM"}},
            {"model_type", "qwen2_moe"},
            {"vocab_size", 100},
            {"hidden_size", 16},
            {"num_hidden_layers", 4},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"intermediate_size", 32},
            {"moe_intermediate_size", 8},
            {"shared_expert_intermediate_size", 24},
            {"num_experts", 4},
            {"num_experts_per_tok", 2},
            {"decoder_sparse_step", 2},
            {"mlp_only_layers", {3}},
            {"eos_token_id", 7},
            {"rope_theta", 1e6}};
  }
  std::filesystem::path dir_;
};

TEST_F(ModelConfigTest, Qwen2MoeSparseLayersFollowStepAndMlpOnlyLayers) {
  Write("config.json", Qwen2().dump());
  auto cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  // (i + 1) % 2 == 0 -> layers 1 and 3; layer 3 is in mlp_only_layers.
  EXPECT_THAT(cfg->layer_is_moe, ElementsAre(false, true, false, false));
  EXPECT_EQ(cfg->head_dim, 4);
  EXPECT_TRUE(cfg->qkv_bias);
  EXPECT_FALSE(cfg->norm_topk_prob);
  EXPECT_EQ(cfg->shared_expert_intermediate_size, 24);
  EXPECT_FLOAT_EQ(cfg->rope_theta, 1e6f);
  EXPECT_THAT(cfg->eos_token_ids, ElementsAre(7));
}

TEST_F(ModelConfigTest, GenerationConfigEosOverridesConfigEos) {
  Write("config.json", Qwen2().dump());
  Write("generation_config.json", R"({"eos_token_id": [3, 9]})");
  auto cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_THAT(cfg->eos_token_ids, ElementsAre(3, 9));
}

TEST_F(ModelConfigTest, MissingFileIsNotFound) {
  auto cfg = LoadModelConfig(dir_.string());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(cfg.status().message(), HasSubstr("config.json"));
}

TEST_F(ModelConfigTest, BadJsonNamesTheFile) {
  Write("config.json", "{\"architectures\": [");
  auto cfg = LoadModelConfig(dir_.string());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cfg.status().message(), HasSubstr("config.json"));
}

TEST_F(ModelConfigTest, UnsupportedArchitectureIsNamed) {
  nlohmann::json j = Qwen2();
  j["architectures"] = {"GPT2LMHeadModel"};
  Write("config.json", j.dump());
  auto cfg = LoadModelConfig(dir_.string());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(cfg.status().message(), HasSubstr("GPT2LMHeadModel"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("MixtralForCausalLM"));
}

TEST_F(ModelConfigTest, UnsupportedRopeScalingIsRefused) {
  nlohmann::json j = Qwen2();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  Write("config.json", j.dump());
  auto cfg = LoadModelConfig(dir_.string());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(cfg.status().message(), HasSubstr("rope_scaling"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("yarn"));
  j["rope_scaling"] = {{"rope_type", "default"}};
  Write("config.json", j.dump());
  EXPECT_TRUE(LoadModelConfig(dir_.string()).ok());
}

TEST_F(ModelConfigTest, MissingOrWrongKeysAreNamed) {
  nlohmann::json j = Qwen2();
  j.erase("hidden_size");
  Write("config.json", j.dump());
  auto cfg = LoadModelConfig(dir_.string());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cfg.status().message(), HasSubstr("hidden_size"));

  j = Qwen2();
  j["num_key_value_heads"] = 3;
  Write("config.json", j.dump());
  EXPECT_THAT(LoadModelConfig(dir_.string()).status().message(), HasSubstr("num_key_value_heads"));

  j = Qwen2();
  j["num_experts_per_tok"] = 9;  // more than the 4 experts
  Write("config.json", j.dump());
  EXPECT_EQ(LoadModelConfig(dir_.string()).status().code(), absl::StatusCode::kInvalidArgument);

  j = Qwen2();
  j["vocab_size"] = "many";
  Write("config.json", j.dump());
  EXPECT_THAT(LoadModelConfig(dir_.string()).status().message(), HasSubstr("vocab_size"));
}

TEST_F(ModelConfigTest, EosIdsOutsideTheVocabularyAreIgnoredWithAWarning) {
  nlohmann::json j = Qwen2();
  j["eos_token_id"] = {7, 100, -1};  // 100 = vocab_size: no token has it
  Write("config.json", j.dump());
  auto cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_THAT(cfg->eos_token_ids, ElementsAre(7));
  ASSERT_EQ(cfg->warnings.size(), 2u);
  EXPECT_THAT(cfg->warnings[0],
              HasSubstr("config.json: eos_token_id 100 is outside the vocabulary of 100 tokens; "
                        "ignored, as transformers does"));
  EXPECT_THAT(cfg->warnings[1], HasSubstr("eos_token_id -1"));
  // The same from generation_config.json, which names its own file.
  Write("config.json", Qwen2().dump());
  Write("generation_config.json", R"({"eos_token_id": 50282})");
  cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->eos_token_ids.empty());
  ASSERT_EQ(cfg->warnings.size(), 1u);
  EXPECT_THAT(cfg->warnings[0], HasSubstr("generation_config.json: eos_token_id 50282"));
}

TEST_F(ModelConfigTest, GenerationConfigSamplingDefaults) {
  Write("config.json", Qwen2().dump());
  auto cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_FALSE(cfg->default_temperature || cfg->default_top_p || cfg->default_top_k);

  Write("generation_config.json",
        R"({"do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20})");
  cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_FLOAT_EQ(cfg->default_temperature.value_or(-1), 0.6f);
  EXPECT_FLOAT_EQ(cfg->default_top_p.value_or(-1), 0.95f);
  EXPECT_EQ(cfg->default_top_k.value_or(-1), 20);

  for (const char* bad : {R"({"temperature": -1})", R"({"top_p": 0})", R"({"top_p": 1.5})",
                          R"({"top_k": -2})", R"({"top_k": 2.5})", R"({"temperature": "hot"})"}) {
    Write("generation_config.json", bad);
    cfg = LoadModelConfig(dir_.string());
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(cfg.status().message(), HasSubstr("generation_config.json")) << bad;
  }
}

TEST_F(ModelConfigTest, FamiliesSetTheirAttentionOptions) {
  nlohmann::json mixtral = {{"architectures", {"MixtralForCausalLM"}},
                            {"vocab_size", 10},
                            {"hidden_size", 8},
                            {"num_hidden_layers", 2},
                            {"num_attention_heads", 2},
                            {"intermediate_size", 4},
                            {"num_local_experts", 4},
                            {"num_experts_per_tok", 2},
                            {"sliding_window", 64}};
  Write("config.json", mixtral.dump());
  auto cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->norm_topk_prob);
  EXPECT_EQ(cfg->sliding_window, 64);
  EXPECT_EQ(cfg->qk_norm, QkNorm::kNone);
  EXPECT_THAT(cfg->layer_is_moe, ElementsAre(true, true));

  nlohmann::json olmoe = mixtral;
  olmoe["architectures"] = {"OlmoeForCausalLM"};
  olmoe.erase("num_local_experts");
  olmoe["num_experts"] = 4;
  olmoe["clip_qkv"] = 8.0;
  Write("config.json", olmoe.dump());
  cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->qk_norm, QkNorm::kFullWidth);
  EXPECT_FLOAT_EQ(cfg->clip_qkv, 8.f);
  EXPECT_FALSE(cfg->norm_topk_prob);

  nlohmann::json qwen3 = Qwen2();
  qwen3["architectures"] = {"Qwen3MoeForCausalLM"};
  qwen3["head_dim"] = 8;
  qwen3["norm_topk_prob"] = true;
  Write("config.json", qwen3.dump());
  cfg = LoadModelConfig(dir_.string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(cfg->head_dim, 8);
  EXPECT_TRUE(cfg->norm_topk_prob);
  EXPECT_FALSE(cfg->qkv_bias);
  EXPECT_EQ(cfg->shared_expert_intermediate_size, 0);
}

}  // namespace
}  // namespace moe
