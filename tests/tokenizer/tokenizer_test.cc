// Unit tests of the tokenizer.json tokenizer on small hand-written tokenizer files: BPE
// merge order, both merges formats, byte fallback, added tokens, post-processing, errors,
// and streaming decode. Agreement with Hugging Face on real vocabularies is the golden
// test's job (tests/golden/tokenizer_golden_test.cc).
#include "tokenizer/tokenizer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moe {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Writes `content` to a fresh file under the test temp dir and returns its path.
std::string WriteTemp(const std::string& name, const std::string& content) {
  // Per process: ctest runs the tests of this file in parallel processes.
  const fs::path dir =
      fs::path(testing::TempDir()) / ("tokenizer_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path path = dir / name;
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

std::unique_ptr<Tokenizer> Load(const std::string& name, const std::string& json,
                                const std::string& config = "") {
  const std::string path = WriteTemp(name + ".json", json);
  const std::string config_path = config.empty() ? "" : WriteTemp(name + "_config.json", config);
  auto tok = Tokenizer::FromFiles(path, config_path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& tok, std::string_view text, bool special = false) {
  auto ids = tok.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

// True when `s` is well-formed UTF-8 (checked independently of the library).
bool WellFormed(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// GPT-2's byte -> character table, written out here independently of the library.
std::string ByteLevelChar(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int v = 0; v < b; ++v) {
      if (!((v >= '!' && v <= '~') || (v >= 0xA1 && v <= 0xAC) || v >= 0xAE)) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

// --- BPE merges -----------------------------------------------------------------------

constexpr char kTinyBpe[] = R"json({
  "added_tokens": [],
  "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
  "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
            "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, "aa": 7},
            "merges": MERGES}
})json";

std::string TinyBpe(const std::string& merges) {
  std::string s = kTinyBpe;
  s.replace(s.find("MERGES"), 6, merges);
  return s;
}

TEST(TokenizerTest, BpeAppliesMergesByRank) {
  auto tok = Load("tiny_strings", TinyBpe(R"(["a b", "ab c", "b c", "a a"])"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "abc"), ElementsAre(6));  // a b -> ab, ab c -> abc
  EXPECT_THAT(Enc(*tok, "bc"), ElementsAre(5));
  EXPECT_THAT(Enc(*tok, "aaa"), ElementsAre(7, 1));  // equal ranks: leftmost pair first
  EXPECT_THAT(Enc(*tok, "cab ab"), ElementsAre(3, 4, 4));
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{6, 5}, false), "abc bc");  // no decoder: " "
}

TEST(TokenizerTest, BpeRankOrderChangesSegmentation) {
  // "b c" ranked before "a b": abc -> a + bc, and a + bc has no merge.
  auto tok = Load("tiny_rank", TinyBpe(R"(["b c", "a b", "ab c"])"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "abc"), ElementsAre(1, 5));
}

TEST(TokenizerTest, BpePairMergesMatchStringMerges) {
  auto strings = Load("tiny_s", TinyBpe(R"(["a b", "ab c"])"));
  auto pairs = Load("tiny_p", TinyBpe(R"([["a", "b"], ["ab", "c"]])"));
  ASSERT_NE(strings, nullptr);
  ASSERT_NE(pairs, nullptr);
  for (const char* text : {"abc", "cba", "aabbcc abcabc"}) {
    EXPECT_EQ(Enc(*strings, text), Enc(*pairs, text)) << text;
  }
}

TEST(TokenizerTest, UnknownCharactersFuseIntoOneUnk) {
  auto tok = Load("tiny_unk", TinyBpe(R"(["a b"])"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "xyzab"), ElementsAre(0, 4));
  EXPECT_THAT(Enc(*tok, "a\xC3\xA9\xC3\xA9"), ElementsAre(1, 0));
}

TEST(TokenizerTest, VocabularyAccessors) {
  auto tok = Load("tiny_vocab", TinyBpe(R"(["a b"])"));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 8);
  EXPECT_EQ(tok->TokenToId("abc"), 6);
  EXPECT_EQ(tok->TokenToId("zzz"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(5), "bc");
  EXPECT_EQ(tok->IdToToken(99), std::nullopt);
  EXPECT_EQ(tok->IdToToken(-1), std::nullopt);
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{1, 99, -3, 2}, false), "a b");  // unknown ids: nothing
}

// --- SentencePiece-style BPE with byte fallback ----------------------------------------

std::string LlamaJson(bool with_added_user) {
  std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2)";
  for (int b = 0; b < 256; ++b) {
    char name[16];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab += ", " + JsonString(name) + ": " + std::to_string(3 + b);
  }
  // 259.. : ▁ h e l o w r d ▁h ▁he ll ▁hell ▁hello
  vocab += R"(, "▁": 259, "h": 260, "e": 261, "l": 262, "o": 263, "w": 264, "r": 265, "d": 266,
              "▁h": 267, "▁he": 268, "ll": 269, "▁hell": 270, "▁hello": 271, "▁w": 272)";
  std::string added = R"({"id": 0, "content": "<unk>", "special": true, "normalized": false},
      {"id": 1, "content": "<s>", "special": true, "normalized": false},
      {"id": 2, "content": "</s>", "special": true, "normalized": false})";
  if (with_added_user) {
    added += R"(, {"id": 273, "content": "<user>", "special": true, "normalized": false,
                   "lstrip": true, "rstrip": true},
               {"id": 274, "content": "cat", "special": false, "normalized": false,
                "single_word": true})";
  }
  return R"json({
  "added_tokens": [)json" +
         added + R"json(],
  "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": {)json" +
         vocab + R"json(},
            "merges": ["▁ h", "▁h e", "l l", "▁he ll", "▁hell o", "▁ w"]}
})json";
}

TEST(TokenizerTest, ByteFallbackEncodesMissingCharactersAsBytes) {
  auto tok =
      Load("llama", LlamaJson(false), R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}})");
  ASSERT_NE(tok, nullptr);
  // "▁hello▁wé": é (C3 A9) is not a token, so it becomes <0xC3> <0xA9>.
  EXPECT_THAT(Enc(*tok, "hello w\xC3\xA9"), ElementsAre(271, 272, 3 + 0xC3, 3 + 0xA9));
  EXPECT_THAT(Enc(*tok, "hello", /*special=*/true), ElementsAre(1, 271));
  EXPECT_EQ(tok->Decode(Enc(*tok, "hello w\xC3\xA9"), false), "hello w\xC3\xA9");
  // A lone continuation byte decodes to U+FFFD.
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{271, 3 + 0xA9}, false), "hello\xEF\xBF\xBD");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->IsSpecial(1));
  EXPECT_FALSE(tok->IsSpecial(271));
}

TEST(TokenizerTest, SpecialTokensInTextAreMatchedBeforeTheModel) {
  auto tok = Load("llama_added", LlamaJson(true));
  ASSERT_NE(tok, nullptr);
  // Legacy Llama: every stretch between added tokens gets its own "▁" prefix.
  EXPECT_THAT(Enc(*tok, "hello</s>hello"), ElementsAre(271, 2, 271));
  // <user> has lstrip and rstrip: the spaces around it are part of the match.
  EXPECT_THAT(Enc(*tok, "hello  <user>  hello"), ElementsAre(271, 273, 271));
  // "cat" is single_word: matched alone, not inside a word.
  EXPECT_THAT(Enc(*tok, "w cat"), ElementsAre(272, 259, 274));
  EXPECT_EQ(Enc(*tok, "wcat").back(), 3 + 't');
  const std::vector<int32_t> ids = {1, 271, 2, 271};
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/false), "<s> hello</s> hello");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/true), "hello hello");
}

TEST(TokenizerTest, InvalidUtf8IsRejected) {
  auto tok = Load("llama_utf8", LlamaJson(false));
  ASSERT_NE(tok, nullptr);
  for (std::string bad : {std::string("\xC3"), std::string("a\xFF"), std::string("\xC0\x80"),
                          std::string("\xED\xA0\x80"), std::string("\xF4\x90\x80\x80")}) {
    auto ids = tok->Encode(bad, false);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(Enc(*tok, ""), IsEmpty());
  EXPECT_THAT(Enc(*tok, "", /*special=*/true), ElementsAre(1));
}

TEST(TokenizerTest, MetaspacePrependSchemeFirstOnlyAtTheStart) {
  std::string json = LlamaJson(false);
  const size_t n = json.find(R"("normalizer")");
  const size_t p = json.find(R"("post_processor")");
  json.replace(n, p - n, R"("normalizer": null,
      "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
      )");
  auto tok = Load("metaspace_first", json);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "hello hello"), ElementsAre(271, 271));
  // After an added token the text does not start the input: no "▁" is prepended.
  EXPECT_THAT(Enc(*tok, "</s>hello"), ElementsAre(2, 260, 261, 269, 263));
}

// --- Byte-level BPE ---------------------------------------------------------------------

// Byte-level tokenizer whose vocabulary is the 256 byte characters plus a few merges.
std::string ByteLevelJson(const std::string& pre_tokenizer) {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    vocab += (b ? ", " : "") + JsonString(ByteLevelChar(b)) + ": " + std::to_string(b);
  }
  const std::string g = ByteLevelChar(' ');  // "Ġ"
  vocab += ", " + JsonString(g + "h") + ": 256, " + JsonString(g + "hi") + ": 257";
  return R"json({
  "added_tokens": [{"id": 258, "content": "<|endoftext|>", "special": true, "normalized": false}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": )json" +
         pre_tokenizer + R"json(,
  "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {)json" +
         vocab + R"json(},
            "merges": [[)json" +
         JsonString(g) + R"json(, "h"], [)json" + JsonString(g + "h") +
         R"json(, "i"]]}
})json";
}

TEST(TokenizerTest, ByteLevelMapsBytesAndMerges) {
  auto tok =
      Load("bytelevel",
           ByteLevelJson(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "a hi"), ElementsAre('a', 257));
  EXPECT_THAT(Enc(*tok, "\xC3\xA9"), ElementsAre(0xC3, 0xA9));
  // NFC: e + combining acute becomes é before the byte mapping.
  EXPECT_THAT(Enc(*tok, "e\xCC\x81"), ElementsAre(0xC3, 0xA9));
  EXPECT_THAT(Enc(*tok, "hi<|endoftext|> hi"), ElementsAre('h', 'i', 258, 257));
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{'a', 257, 258}, false), "a hi<|endoftext|>");
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{'a', 257, 258}, true), "a hi");
}

TEST(TokenizerTest, ByteLevelAddPrefixSpace) {
  auto tok =
      Load("bytelevel_prefix",
           ByteLevelJson(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "hi"), ElementsAre(257));
}

TEST(TokenizerTest, SplitRegexAndDigitsPreTokenizers) {
  auto tok = Load("bytelevel_digits", ByteLevelJson(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Digits", "individual_digits": true},
      {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})"));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "12  hi"), ElementsAre('1', '2', 'h', 'i'));
}

// --- Streaming decode -------------------------------------------------------------------

void ExpectStreamingMatchesDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  IncrementalDecoder stream(tok, /*skip_special_tokens=*/false);
  std::string all;
  int nonempty = 0;
  for (int32_t id : ids) {
    const std::string piece = stream.Push(id);
    EXPECT_TRUE(WellFormed(piece)) << "broken UTF-8 piece after id " << id;
    nonempty += !piece.empty();
    all += piece;
  }
  const std::string rest = stream.Flush();
  EXPECT_TRUE(WellFormed(rest));
  all += rest;
  EXPECT_EQ(all, tok.Decode(ids, false));
  EXPECT_GT(nonempty, 0);
}

TEST(IncrementalDecoderTest, ByteLevelEmojiAndCjkSplitAcrossByteTokens) {
  auto tok =
      Load("bytelevel_stream",
           ByteLevelJson(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})"));
  ASSERT_NE(tok, nullptr);
  // Family ZWJ sequence, a thumbs-up with skin tone, CJK, and plain text: one token per byte.
  const std::string text =
      "hi \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
      "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE4\xB8\x96\xE7\x95\x8C!";
  const std::vector<int32_t> ids = Enc(*tok, text);
  ASSERT_GT(ids.size(), 20u);
  EXPECT_EQ(tok->Decode(ids, false), text);
  ExpectStreamingMatchesDecode(*tok, ids);
}

TEST(IncrementalDecoderTest, ByteFallbackCjkAndLeadingSpaceStrip) {
  auto tok = Load("llama_stream", LlamaJson(false));
  ASSERT_NE(tok, nullptr);
  const std::string text = "hello \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\xA4\x96 hello";
  const std::vector<int32_t> ids = Enc(*tok, text);
  EXPECT_EQ(tok->Decode(ids, false), text);
  ExpectStreamingMatchesDecode(*tok, ids);
}

TEST(IncrementalDecoderTest, HeldBytesComeOutAsReplacementOnFlush) {
  auto tok = Load("llama_flush", LlamaJson(false));
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder stream(*tok, false);
  EXPECT_EQ(stream.Push(271), "hello");
  EXPECT_EQ(stream.Push(3 + 0xE4), "");  // first byte of a 3-byte character
  EXPECT_EQ(stream.Push(3 + 0xB8), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");  // ByteFallback: one U+FFFD per byte
}

// --- Errors -----------------------------------------------------------------------------

TEST(TokenizerErrorsTest, MissingFileNamesThePath) {
  auto tok = Tokenizer::FromFiles("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("/nonexistent/dir/tokenizer.json"));
}

TEST(TokenizerErrorsTest, BadJsonNamesTheFile) {
  const std::string path = WriteTemp("bad.json", "{\"model\": {\"type\": \"BPE\",");
  auto tok = Tokenizer::FromFiles(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
  const std::string ok_path = WriteTemp("ok_for_config.json", TinyBpe("[]"));
  const std::string bad_config = WriteTemp("bad_config.json", "not json");
  auto with_config = Tokenizer::FromFiles(ok_path, bad_config);
  ASSERT_FALSE(with_config.ok());
  EXPECT_THAT(with_config.status().message(), HasSubstr(bad_config));
}

TEST(TokenizerErrorsTest, UnsupportedComponentsNameFileAndType) {
  struct Case {
    std::string from, to, type;
  };
  const std::vector<Case> cases = {
      {R"("type": "BPE")", R"("type": "Unigram")", "Unigram"},
      {R"("normalizer": null)", R"("normalizer": {"type": "BertNormalizer"})", "BertNormalizer"},
      {R"("pre_tokenizer": {"type": "WhitespaceSplit"})",
       R"("pre_tokenizer": {"type": "UnicodeScripts"})", "UnicodeScripts"},
      {R"("decoder": null)", R"("decoder": {"type": "CTC"})", "CTC"},
      {R"("post_processor": null)", R"("post_processor": {"type": "Mystery"})", "Mystery"},
  };
  for (const Case& c : cases) {
    std::string json = TinyBpe(R"(["a b"])");
    const size_t pos = json.find(c.from);
    ASSERT_NE(pos, std::string::npos) << c.from;
    json.replace(pos, c.from.size(), c.to);
    const std::string path = WriteTemp("unsupported_" + c.type + ".json", json);
    auto tok = Tokenizer::FromFiles(path);
    ASSERT_FALSE(tok.ok()) << c.type;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << c.type;
    EXPECT_THAT(tok.status().message(), HasSubstr(path));
    EXPECT_THAT(tok.status().message(), HasSubstr(c.type));
  }
}

TEST(TokenizerErrorsTest, MergeOfUnknownTokenIsAnError) {
  const std::string path = WriteTemp("bad_merge.json", TinyBpe(R"(["a q"])"));
  auto tok = Tokenizer::FromFiles(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace moe
