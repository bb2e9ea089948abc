// Per-request routing and SCMoE self-contrast decoding against transformers: the greedy
// continuations of tools/make_routing_reference.py (routing_reference.json beside each
// golden fixture: transformers' MoE blocks patched to top-k / top-p routing, and SCMoE's
// strong and rank-r weak passes combined by the rule of specs/moe_algorithms.md 1.2).
// Every case is run through the serving step loop alone, then all of a fixture's cases at
// once beside plain requests, and must match token for token both times.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/loader.h"
#include "scheduler/batch_runner.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string name;
  GenerateRequest request;
  std::vector<int32_t> want;
};

nlohmann::json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::vector<Case> ReadCases(const nlohmann::json& ref) {
  std::vector<Case> cases;
  for (const nlohmann::json& c : ref["cases"]) {
    Case out;
    GenerateRequest& r = out.request;
    r.prompt = c["input_ids"].get<std::vector<int32_t>>();
    out.want = c["ids"].get<std::vector<int32_t>>();
    r.max_tokens = static_cast<int>(out.want.size());
    r.sampling.temperature = 0.f;
    r.ignore_eos = true;
    if (c["kind"] == "routing") {
      const nlohmann::json& routing = c["routing"];
      if (routing.contains("top_k")) r.routing.top_k = routing["top_k"].get<int>();
      if (routing.contains("top_p")) r.routing.top_p = routing["top_p"].get<float>();
      out.name = "routing " + routing.dump();
    } else {
      SelfContrastParams sc;
      sc.alpha = c["alpha"].get<float>();
      sc.beta = c["beta"].get<float>();
      sc.weak_rank = c["weak_rank"].get<int>();
      sc.ban_eos = c["ban_eos"].get<bool>();
      r.self_contrast = sc;
      out.name = "self_contrast alpha " + c["alpha"].dump() + " beta " + c["beta"].dump() +
                 " weak_rank " + c["weak_rank"].dump() + (sc.ban_eos ? " ban_eos" : "");
    }
    out.name += " prompt of " + std::to_string(r.prompt.size());
    cases.push_back(std::move(out));
  }
  return cases;
}

class RoutingGoldenTest : public testing::TestWithParam<std::string> {};

TEST_P(RoutingGoldenTest, ContinuationsMatchTransformersAloneAndBatched) {
  const fs::path dir = fs::path(MOE_SOURCE_DIR) / "tests/golden/data/models" / GetParam();
  absl::StatusOr<LoadedModel> lm = LoadModelDir(dir.string());
  ASSERT_TRUE(lm.ok()) << lm.status();
  const nlohmann::json ref = ReadJson(dir / "routing_reference.json");
  EXPECT_EQ(ref["eos_token_ids"].get<std::vector<int32_t>>(), lm->config.eos_token_ids);
  const std::vector<Case> cases = ReadCases(ref);
  int routing = 0, contrast = 0, weak_rank_3 = 0, ban_eos = 0;
  for (const Case& c : cases) {
    routing += c.request.routing.any();
    contrast += c.request.self_contrast.has_value();
    weak_rank_3 += c.request.self_contrast && c.request.self_contrast->weak_rank == 3;
    ban_eos += c.request.self_contrast && c.request.self_contrast->ban_eos;
  }
  ASSERT_GE(routing, 4) << "the reference has too few routing cases";
  ASSERT_GE(contrast, 4) << "the reference has too few self_contrast cases";
  EXPECT_GE(weak_rank_3, 1);
  EXPECT_GE(ban_eos, 1);

  for (const Case& c : cases) {
    auto alone = RunToCompletion(*lm, std::span(&c.request, 1));
    ASSERT_TRUE(alone.ok()) << c.name << ": " << alone.status();
    EXPECT_EQ((*alone)[0].tokens, c.want) << c.name << ", alone";
    EXPECT_EQ((*alone)[0].usage.prompt_tokens, static_cast<int>(c.request.prompt.size()));
  }

  // Every case at once, between plain greedy requests, with a small token budget so the
  // prefills are chunked and share steps with decodes.
  std::vector<GenerateRequest> batch;
  std::vector<int> index;  // batch position of each case
  for (size_t i = 0; i < cases.size(); ++i) {
    GenerateRequest plain = cases[i].request;
    plain.routing = {};
    plain.self_contrast.reset();
    batch.push_back(plain);
    index.push_back(static_cast<int>(batch.size()));
    batch.push_back(cases[i].request);
  }
  RunOptions options;
  options.max_batched_tokens = 48;
  auto together = RunToCompletion(*lm, batch, options);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ((*together)[index[i]].tokens, cases[i].want) << cases[i].name << ", batched";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RoutingGoldenTest,
                         testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"));

}  // namespace
}  // namespace moe
