#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "client/prompts.h"

namespace moe::client {
namespace {

// Synthetic prompts are words joined by single spaces.
int WordCount(const std::string& text) {
  if (text.empty()) return 0;
  return 1 + static_cast<int>(std::count(text.begin(), text.end(), ' '));
}

TEST(ParseLengthRangeTest, ValueOrMinMax) {
  auto fixed = ParseLengthRange("128");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->min, 128);
  EXPECT_EQ(fixed->max, 128);
  EXPECT_TRUE(fixed->fixed());
  auto range = ParseLengthRange("64:256");
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->min, 64);
  EXPECT_EQ(range->max, 256);
  for (const char* bad : {"", "0", "-4", "abc", "5:3", "1:", ":4", "0:4", "2.5"}) {
    EXPECT_FALSE(ParseLengthRange(bad).ok()) << bad;
  }
}

TEST(SyntheticPromptsTest, FixedLengths) {
  SyntheticPromptOptions o;
  o.num_prompts = 20;
  o.input_len = LengthRange::Fixed(37);
  o.output_len = LengthRange::Fixed(16);
  auto prompts = SyntheticPrompts(o);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 20u);
  for (const PromptSpec& p : *prompts) {
    EXPECT_EQ(WordCount(p.text), 37) << p.text;
    EXPECT_EQ(p.max_tokens, 16);
    EXPECT_TRUE(p.token_ids.empty());
  }
  // Prompts differ from one another (no accidental prefix sharing across the whole set).
  std::set<std::string> distinct;
  for (const PromptSpec& p : *prompts) distinct.insert(p.text);
  EXPECT_EQ(distinct.size(), 20u);
}

TEST(SyntheticPromptsTest, RangesAreRespectedAndCovered) {
  SyntheticPromptOptions o;
  o.num_prompts = 400;
  o.input_len = {3, 6};
  o.output_len = {10, 12};
  o.seed = 5;
  auto prompts = SyntheticPrompts(o);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  std::set<int> input_seen, output_seen;
  for (const PromptSpec& p : *prompts) {
    const int words = WordCount(p.text);
    EXPECT_GE(words, 3);
    EXPECT_LE(words, 6);
    EXPECT_GE(p.max_tokens, 10);
    EXPECT_LE(p.max_tokens, 12);
    input_seen.insert(words);
    output_seen.insert(p.max_tokens);
  }
  EXPECT_EQ(input_seen, (std::set<int>{3, 4, 5, 6}));
  EXPECT_EQ(output_seen, (std::set<int>{10, 11, 12}));
}

TEST(SyntheticPromptsTest, SeededReproducibility) {
  SyntheticPromptOptions o;
  o.num_prompts = 10;
  o.input_len = {5, 50};
  o.output_len = {1, 100};
  o.seed = 11;
  auto a = SyntheticPrompts(o);
  auto b = SyntheticPrompts(o);
  o.seed = 12;
  auto c = SyntheticPrompts(o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  bool any_difference = false;
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].text, (*b)[i].text);
    EXPECT_EQ((*a)[i].max_tokens, (*b)[i].max_tokens);
    any_difference |= (*a)[i].text != (*c)[i].text;
  }
  EXPECT_TRUE(any_difference);
}

TEST(SyntheticPromptsTest, BadOptions) {
  SyntheticPromptOptions o;
  o.num_prompts = -1;
  EXPECT_EQ(SyntheticPrompts(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.num_prompts = 1;
  o.input_len = {0, 4};
  EXPECT_EQ(SyntheticPrompts(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.input_len = {4, 4};
  o.output_len = {9, 8};
  auto bad = SyntheticPrompts(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("output length"), std::string::npos) << bad.status();
  o.num_prompts = 0;
  o.output_len = {8, 9};
  auto none = SyntheticPrompts(o);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

absl::StatusOr<std::vector<PromptSpec>> Parse(const std::string& text, int default_max = 64) {
  std::istringstream in(text);
  return ParsePromptsJsonl(in, "prompts.jsonl", default_max);
}

TEST(JsonlTest, ParsesPromptsAndAliases) {
  auto prompts = Parse(
      "{\"prompt\": \"Hello there\", \"max_tokens\": 12}\n"
      "\n"
      "{\"text\": \"Once upon a time\", \"output_len\": 5}\r\n"
      "   \n"
      "{\"prompt\": \"no length\"}\n"
      "{\"prompt\": [1, 2, 3], \"max_tokens\": 4, \"extra\": true}");
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 4u);
  EXPECT_EQ((*prompts)[0].text, "Hello there");
  EXPECT_EQ((*prompts)[0].max_tokens, 12);
  EXPECT_EQ((*prompts)[1].text, "Once upon a time");
  EXPECT_EQ((*prompts)[1].max_tokens, 5);
  EXPECT_EQ((*prompts)[2].text, "no length");
  EXPECT_EQ((*prompts)[2].max_tokens, 64);  // the default
  EXPECT_TRUE((*prompts)[3].text.empty());
  EXPECT_EQ((*prompts)[3].token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ((*prompts)[3].max_tokens, 4);
}

void ExpectLineError(const std::string& text, const std::string& where, const std::string& what) {
  auto result = Parse(text);
  ASSERT_FALSE(result.ok()) << text;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(result.status().message());
  EXPECT_EQ(message.rfind(where, 0), 0u) << message;
  EXPECT_NE(message.find(what), std::string::npos) << message;
}

TEST(JsonlTest, ErrorsNameTheLine) {
  const std::string good = "{\"prompt\": \"fine\"}\n";
  ExpectLineError(good + "\n{\"prompt\": \"unterminated}\n", "prompts.jsonl:3: ", "not valid JSON");
  ExpectLineError(good + "{\"max_tokens\": 3}\n", "prompts.jsonl:2: ", "missing \"prompt\"");
  ExpectLineError("[1, 2]\n", "prompts.jsonl:1: ", "expected a JSON object");
  ExpectLineError("{\"prompt\": 7}\n", "prompts.jsonl:1: ", "\"prompt\" must be");
  ExpectLineError("{\"prompt\": \"\"}\n", "prompts.jsonl:1: ", "empty prompt");
  ExpectLineError("{\"prompt\": [1, -2]}\n", "prompts.jsonl:1: ", "token ids");
  ExpectLineError(good + good + "{\"prompt\": \"x\", \"max_tokens\": 0}\n",
                  "prompts.jsonl:3: ", "\"max_tokens\" must be a positive integer");
  ExpectLineError("{\"text\": \"x\", \"output_len\": \"ten\"}\n",
                  "prompts.jsonl:1: ", "\"output_len\" must be a positive integer");
  auto empty = Parse("\n\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(std::string(empty.status().message()), "prompts.jsonl: no prompts");
}

TEST(JsonlTest, ReadsAFile) {
  const std::string path = ::testing::TempDir() + "client_prompts_test.jsonl";
  {
    std::ofstream out(path);
    out << "{\"prompt\": \"a\", \"max_tokens\": 2}\n{\"prompt\": \"b\"}\n{oops}\n";
  }
  auto result = ReadPromptsJsonl(path, 8);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(path + ":3: "), std::string::npos) << result.status();
  {
    std::ofstream out(path);
    out << "{\"prompt\": \"a\", \"max_tokens\": 2}\n{\"prompt\": \"b\"}\n";
  }
  result = ReadPromptsJsonl(path, 8);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[1].max_tokens, 8);
  std::remove(path.c_str());

  auto missing = ReadPromptsJsonl("/nonexistent/prompts.jsonl", 8);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/prompts.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace moe::client
