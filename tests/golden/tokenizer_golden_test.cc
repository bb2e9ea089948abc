// Golden test of the C++ tokenizer against Hugging Face `tokenizers`: for every tokenizer
// under tests/golden/data/tokenizers/ (made by tools/make_tokenizer_fixtures.py), every
// corpus entry must encode to the ids the library produced, with and without special
// tokens, and decode to the library's text. IncrementalDecoder must reproduce Decode.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

fs::path DataDir() { return fs::path(MOE_TEST_SOURCE_DIR) / "tests/golden/data/tokenizers"; }

std::vector<std::string> TokenizerNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(DataDir(), ec)) {
    if (fs::exists(entry.path() / "tokenizer.json") && fs::exists(entry.path() / "golden.jsonl")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "]";
}

TEST(TokenizerGoldenData, ExpectedTokenizersArePresent) {
  const std::vector<std::string> names = TokenizerNames();
  for (const char* required : {"bytelevel", "spbpe", "spbpe_metaspace"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end())
        << "missing golden data for " << required << " under " << DataDir()
        << "; run tools/make_tokenizer_fixtures.py";
  }
}

class TokenizerGoldenTest : public testing::TestWithParam<std::string> {};

TEST_P(TokenizerGoldenTest, MatchesHuggingFace) {
  const fs::path dir = DataDir() / GetParam();
  const fs::path config = dir / "tokenizer_config.json";
  auto tok = Tokenizer::FromFiles((dir / "tokenizer.json").string(),
                                  fs::exists(config) ? config.string() : "");
  ASSERT_TRUE(tok.ok()) << tok.status();

  std::ifstream in(dir / "golden.jsonl");
  ASSERT_TRUE(in) << dir / "golden.jsonl";
  std::string line;
  int lines = 0, mismatches = 0;
  auto report = [&](const std::string& what, const std::string& text, const std::string& want,
                    const std::string& got) {
    ++mismatches;
    // The first few are enough to debug; the count says how many there are.
    if (mismatches <= 3) {
      ADD_FAILURE() << GetParam() << " line " << lines << ": " << what
                    << " differs\n  text: " << nlohmann::json(text).dump() << "\n  hf:   " << want
                    << "\n  ours: " << got;
    }
  };
  while (std::getline(in, line)) {
    ++lines;
    const nlohmann::json row = nlohmann::json::parse(line);
    const std::string text = row.at("text").get<std::string>();
    const auto want_ids = row.at("ids").get<std::vector<int32_t>>();
    const auto want_special = row.at("ids_special").get<std::vector<int32_t>>();
    const std::string want_decoded = row.at("decoded").get<std::string>();
    const std::string want_skip = row.value("decoded_skip", want_decoded);

    auto ids = (*tok)->Encode(text, /*add_special_tokens=*/false);
    auto ids_special = (*tok)->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok() && ids_special.ok()) << ids.status() << " " << ids_special.status();
    if (*ids != want_ids) report("ids", text, IdsToString(want_ids), IdsToString(*ids));
    if (*ids_special != want_special) {
      report("ids_special", text, IdsToString(want_special), IdsToString(*ids_special));
    }
    const std::string decoded = (*tok)->Decode(want_ids, /*skip_special_tokens=*/false);
    if (decoded != want_decoded) {
      report("decode", text, nlohmann::json(want_decoded).dump(), nlohmann::json(decoded).dump());
    }
    const std::string skipped = (*tok)->Decode(want_ids, /*skip_special_tokens=*/true);
    if (skipped != want_skip) {
      report("decode(skip_special_tokens)", text, nlohmann::json(want_skip).dump(),
             nlohmann::json(skipped).dump());
    }
    IncrementalDecoder stream(**tok, /*skip_special_tokens=*/false);
    std::string streamed;
    for (int32_t id : want_ids) streamed += stream.Push(id);
    streamed += stream.Flush();
    if (streamed != want_decoded) {
      report("IncrementalDecoder", text, nlohmann::json(want_decoded).dump(),
             nlohmann::json(streamed).dump());
    }
  }
  EXPECT_GE(lines, 2000) << dir / "golden.jsonl";
  EXPECT_EQ(mismatches, 0) << GetParam() << ": " << mismatches << " mismatches in " << lines
                           << " lines";
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, TokenizerGoldenTest, testing::ValuesIn(TokenizerNames()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TokenizerGoldenTest);

}  // namespace
}  // namespace moe
