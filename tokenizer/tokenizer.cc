#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>
#include <utility>

#include <utf8proc.h>
#include <nlohmann/json.hpp>

#include <unordered_map>
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "tokenizer/tokenizer_bpe.h"
#include "tokenizer/tokenizer_pipeline.h"
#include "tokenizer/unicode.h"

namespace moe {
namespace {

using nlohmann::json;
using tokenizer_internal::BpeModel;
using tokenizer_internal::BpeOptions;
using tokenizer_internal::Decoder;
using tokenizer_internal::Normalizer;
using tokenizer_internal::Piece;
using tokenizer_internal::PostProcessor;
using tokenizer_internal::PreTokenizer;

// An entry of tokenizer.json "added_tokens".
struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// Rust regex \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
bool IsWordChar(char32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Start of the character that ends at `end` (exclusive) in valid UTF-8 `s`.
size_t PrevCharStart(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

char32_t CharBefore(std::string_view s, size_t end) {
  size_t i = PrevCharStart(s, end);
  return unicode::DecodeNext(s, i);
}

char32_t CharAt(std::string_view s, size_t i) { return unicode::DecodeNext(s, i); }

// Leftmost-longest, non-overlapping matching of a set of strings, as the Aho-Corasick
// automaton (MatchKind::LeftmostLongest) of `tokenizers`' AddedVocabulary.
class TokenMatcher {
 public:
  void Add(std::string pattern, size_t index) {
    if (pattern.empty()) return;
    const auto first = static_cast<unsigned char>(pattern[0]);
    by_first_[first].emplace_back(std::move(pattern), index);
    empty_ = false;
  }
  void Finish() {
    for (auto& v : by_first_) {
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.first.size() > b.first.size();
      });
    }
  }
  bool empty() const { return empty_; }

  struct Match {
    size_t start, end, index;
  };
  std::vector<Match> FindAll(std::string_view text) const {
    std::vector<Match> out;
    size_t pos = 0;
    while (pos < text.size()) {
      const auto& candidates = by_first_[static_cast<unsigned char>(text[pos])];
      bool found = false;
      for (const auto& [pattern, index] : candidates) {
        if (text.compare(pos, pattern.size(), pattern) == 0) {
          out.push_back({pos, pos + pattern.size(), index});
          pos += pattern.size();
          found = true;
          break;
        }
      }
      if (!found) ++pos;
    }
    return out;
  }

 private:
  std::array<std::vector<std::pair<std::string, size_t>>, 256> by_first_;
  bool empty_ = true;
};

// A stretch of the input: an added token (`token` >= 0) or text for the model.
struct Segment {
  size_t start, end;
  int32_t token = -1;  // index into the added tokens
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return ss.str();
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

// tokenizer_config.json token fields are a string, null, or {"content": ...}.
std::optional<std::string> ConfigToken(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
    return v.at("content").get<std::string>();
  }
  return std::nullopt;
}

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& path,
                                                           const std::string& config_path);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string> IdToToken(int32_t id) const override;
  bool IsSpecial(int32_t id) const override {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && added_[it->second].special;
  }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }

 private:
  explicit HfTokenizer(BpeModel model) : model_(std::move(model)) {}
  absl::Status Build(const json& j, const json* config);
  // `tokenizers`' AddedVocabulary::find_matches over `text` with `matcher`.
  std::vector<Segment> SplitAddedTokens(std::string_view text, const TokenMatcher& matcher) const;
  void EncodeText(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;

  BpeModel model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;         // id -> index in added_
  tokenizer_internal::StringMap<size_t> added_by_content_;  // content -> index
  TokenMatcher raw_matcher_;                                // added tokens with normalized == false
  TokenMatcher normalized_matcher_;  // normalized == true, matched after normalization
  std::optional<int32_t> bos_id_, eos_id_;
  bool config_add_bos_ = false, config_add_eos_ = false;  // without a post-processor
  int32_t vocab_size_ = 0;
};

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& path,
                                                               const std::string& config_path) {
  MOE_ASSIGN_OR_RETURN(json j, ReadJson(path));
  std::optional<json> config;
  if (!config_path.empty()) {
    MOE_ASSIGN_OR_RETURN(config, ReadJson(config_path));
  }
  try {
    if (!j.contains("model") || !j.at("model").is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no \"model\" object"));
    }
    const json& m = j.at("model");
    const std::string type = m.value("type", m.contains("merges") ? "BPE" : "(no type)");
    if (type != "BPE") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": unsupported model type '", type, "' (only BPE is supported)"));
    }
    if (m.contains("dropout") && m.at("dropout").is_number() && m.at("dropout").get<double>() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": BPE dropout is not supported"));
    }
    tokenizer_internal::StringMap<int32_t> vocab;
    vocab.reserve(m.at("vocab").size());
    for (const auto& [token, id] : m.at("vocab").items()) vocab[token] = id.get<int32_t>();
    std::vector<std::pair<std::string, std::string>> merges;
    if (m.contains("merges")) {
      merges.reserve(m.at("merges").size());
      for (const json& merge : m.at("merges")) {
        if (merge.is_string()) {  // legacy "a b"
          const std::string s = merge.get<std::string>();
          const size_t space = s.find(' ');
          if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
            return absl::InvalidArgumentError(absl::StrCat(path, ": bad merge \"", s, "\""));
          }
          merges.emplace_back(s.substr(0, space), s.substr(space + 1));
        } else {  // ["a", "b"]
          merges.emplace_back(merge.at(0).get<std::string>(), merge.at(1).get<std::string>());
        }
      }
    }
    auto optional_string = [&](const char* key) -> std::optional<std::string> {
      if (!m.contains(key) || m.at(key).is_null()) return std::nullopt;
      return m.at(key).get<std::string>();
    };
    BpeOptions options;
    options.unk_token = optional_string("unk_token");
    options.continuing_subword_prefix = optional_string("continuing_subword_prefix");
    options.end_of_word_suffix = optional_string("end_of_word_suffix");
    options.fuse_unk = m.value("fuse_unk", false);
    options.byte_fallback = m.value("byte_fallback", false);
    options.ignore_merges = m.value("ignore_merges", false);
    auto model = BpeModel::Create(std::move(vocab), merges, std::move(options));
    if (!model.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", model.status().message()));
    }
    std::unique_ptr<HfTokenizer> tok(new HfTokenizer(*std::move(model)));
    absl::Status st = tok->Build(j, config ? &*config : nullptr);
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
    return tok;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed tokenizer: ", e.what()));
  }
}

absl::Status HfTokenizer::Build(const json& j, const json* config) {
  auto present = [&](const char* key) { return j.contains(key) && !j.at(key).is_null(); };
  if (present("normalizer")) {
    MOE_ASSIGN_OR_RETURN(normalizer_, tokenizer_internal::MakeNormalizer(j.at("normalizer")));
  }
  if (present("pre_tokenizer")) {
    MOE_ASSIGN_OR_RETURN(pre_tokenizer_,
                         tokenizer_internal::MakePreTokenizer(j.at("pre_tokenizer")));
  }
  if (present("decoder")) {
    MOE_ASSIGN_OR_RETURN(decoder_, tokenizer_internal::MakeDecoder(j.at("decoder")));
  }
  if (present("post_processor")) {
    MOE_ASSIGN_OR_RETURN(post_processor_,
                         tokenizer_internal::MakePostProcessor(j.at("post_processor")));
  }
  if (present("added_tokens")) {
    for (const json& a : j.at("added_tokens")) {
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = a.at("id").get<int32_t>();
      t.special = a.value("special", false);
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", !t.special);
      if (t.content.empty()) continue;
      // Like `tokenizers` (AddedVocabulary::add_tokens), content the model already has
      // keeps the model's id whatever "id" says.
      if (std::optional<int32_t> model_id = model_.TokenToId(t.content)) t.id = *model_id;
      if (!unicode::IsValidUtf8(t.content) || t.id < 0) {
        return absl::InvalidArgumentError(absl::StrCat("bad added token id ", t.id));
      }
      const size_t index = added_.size();
      if (t.normalized) {
        normalized_matcher_.Add(normalizer_ ? normalizer_->Normalize(t.content) : t.content, index);
      } else {
        raw_matcher_.Add(t.content, index);
      }
      added_by_id_[t.id] = index;
      added_by_content_[t.content] = index;
      added_.push_back(std::move(t));
    }
  }
  raw_matcher_.Finish();
  normalized_matcher_.Finish();

  vocab_size_ = static_cast<int32_t>(model_.id_to_token().size());
  for (const AddedToken& t : added_) vocab_size_ = std::max(vocab_size_, t.id + 1);

  // bos / eos: tokenizer_config.json names them; else the post-processor's ends.
  if (config != nullptr) {
    if (auto name = ConfigToken(*config, "bos_token")) bos_id_ = TokenToId(*name);
    if (auto name = ConfigToken(*config, "eos_token")) eos_id_ = TokenToId(*name);
    if (config->contains("add_bos_token") && config->at("add_bos_token").is_boolean()) {
      config_add_bos_ = config->at("add_bos_token").get<bool>();
    }
    if (config->contains("add_eos_token") && config->at("add_eos_token").is_boolean()) {
      config_add_eos_ = config->at("add_eos_token").get<bool>();
    }
  }
  if (post_processor_) {
    if (!bos_id_) {
      std::vector<int32_t> prefix = post_processor_->Prefix();
      if (!prefix.empty()) bos_id_ = prefix.front();
    }
    if (!eos_id_) {
      std::vector<int32_t> suffix = post_processor_->Suffix();
      if (!suffix.empty()) eos_id_ = suffix.back();
    }
  }
  return absl::OkStatus();
}

std::vector<Segment> HfTokenizer::SplitAddedTokens(std::string_view text,
                                                   const TokenMatcher& matcher) const {
  std::vector<Segment> out;
  size_t start_offset = 0;
  for (const TokenMatcher::Match& m : matcher.FindAll(text)) {
    const AddedToken& t = added_[m.index];
    size_t start = m.start, stop = m.end;
    if (t.single_word) {
      const bool start_space = start == 0 || !IsWordChar(CharBefore(text, start));
      const bool stop_space = stop == text.size() || !IsWordChar(CharAt(text, stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t s = start;
      while (s > 0) {
        const size_t p = PrevCharStart(text, s);
        if (!unicode::IsWhitespace(CharAt(text, p))) break;
        s = p;
      }
      start = std::max(s, start_offset);
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!unicode::IsWhitespace(unicode::DecodeNext(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, static_cast<int32_t>(m.index)});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
  return out;
}

void HfTokenizer::EncodeText(std::string_view text, bool at_start,
                             std::vector<int32_t>& ids) const {
  const std::string normalized = normalizer_ ? normalizer_->Normalize(text) : std::string(text);
  std::vector<Segment> segments;
  if (normalized_matcher_.empty()) {
    segments.push_back({0, normalized.size(), -1});
  } else {
    segments = SplitAddedTokens(normalized, normalized_matcher_);
  }
  for (const Segment& seg : segments) {
    if (seg.token >= 0) {
      ids.push_back(added_[seg.token].id);
      continue;
    }
    std::vector<Piece> pieces;
    pieces.push_back(
        Piece{normalized.substr(seg.start, seg.end - seg.start), at_start && seg.start == 0});
    if (pre_tokenizer_) pre_tokenizer_->PreTokenize(pieces);
    for (const Piece& p : pieces) model_.Tokenize(p.text, ids);
  }
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(std::string_view text,
                                                         bool add_special_tokens) const {
  if (!unicode::IsValidUtf8(text)) {
    return absl::InvalidArgumentError("text to tokenize is not valid UTF-8");
  }
  std::vector<int32_t> ids;
  std::vector<Segment> segments;
  if (raw_matcher_.empty()) {
    segments.push_back({0, text.size(), -1});
  } else {
    segments = SplitAddedTokens(text, raw_matcher_);
  }
  for (const Segment& seg : segments) {
    if (seg.token >= 0) {
      ids.push_back(added_[seg.token].id);
    } else {
      EncodeText(text.substr(seg.start, seg.end - seg.start), seg.start == 0, ids);
    }
  }
  if (add_special_tokens) {
    if (post_processor_) {
      post_processor_->Process(ids);
    } else {
      if (config_add_bos_ && bos_id_) ids.insert(ids.begin(), *bos_id_);
      if (config_add_eos_ && eos_id_) ids.push_back(*eos_id_);
    }
  }
  return ids;
}

std::string HfTokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  const auto& id_to_token = model_.id_to_token();
  for (int32_t id : ids) {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      const AddedToken& t = added_[it->second];
      if (!(skip_special_tokens && t.special)) tokens.push_back(t.content);
      continue;
    }
    if (id < 0 || static_cast<size_t>(id) >= id_to_token.size() || !id_to_token[id]) continue;
    const std::string& token = *id_to_token[id];
    if (skip_special_tokens) {
      // `tokenizers` skips by content: a vocabulary entry spelled like a special token.
      auto it = added_by_content_.find(token);
      if (it != added_by_content_.end() && added_[it->second].special) continue;
    }
    tokens.push_back(token);
  }
  std::string out;
  if (decoder_) {
    decoder_->DecodeChain(tokens);
    for (const std::string& t : tokens) out += t;
  } else {
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k > 0) out += ' ';
      out += tokens[k];
    }
  }
  return out;
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) {
    return added_[it->second].id;
  }
  return model_.TokenToId(token);
}

std::optional<std::string> HfTokenizer::IdToToken(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  const auto& id_to_token = model_.id_to_token();
  if (id < 0 || static_cast<size_t>(id) >= id_to_token.size()) return std::nullopt;
  return id_to_token[id];
}

bool EndsWithReplacementChar(std::string_view s) { return s.ends_with(unicode::kReplacementChar); }

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFiles(
    const std::string& tokenizer_json, const std::string& tokenizer_config_json) {
  try {
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok,
                         HfTokenizer::Load(tokenizer_json, tokenizer_config_json));
    return std::unique_ptr<Tokenizer>(std::move(tok));
  } catch (const json::exception& e) {
    // A field of an unexpected type that a reader did not check: still a bad file, not
    // a crash (errors are values on the load path).
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_json, ": unexpected JSON: ", e.what()));
  }
}

Tokenizer::~Tokenizer() = default;

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

// The prefix_offset / read_offset scheme of TGI and vLLM: decode the window
// ids_[prefix_offset_, end) and emit what it adds to the already emitted
// ids_[prefix_offset_, read_offset_), unless it ends in U+FFFD (an incomplete character,
// held back until more bytes arrive). Decoding with a left context keeps decoders that
// treat the first token specially (Strip, Metaspace) consistent with a full Decode.
std::string IncrementalDecoder::Push(int32_t id) {
  ids_.push_back(id);
  std::span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  if (new_text.size() <= prefix_text.size() || EndsWithReplacementChar(new_text) ||
      !new_text.starts_with(prefix_text)) {
    return "";
  }
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return new_text.substr(prefix_text.size());
}

std::string IncrementalDecoder::Flush() {
  std::span<const int32_t> all(ids_);
  const std::string prefix_text = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  const std::string new_text = tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  prefix_offset_ = read_offset_ = ids_.size();
  if (new_text.size() <= prefix_text.size() || !new_text.starts_with(prefix_text)) return "";
  return new_text.substr(prefix_text.size());
}

}  // namespace moe
