#include "tokenizer/tokenizer_pipeline.h"

#include <algorithm>
#include <array>
#include <functional>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/status_macros.h"
#include "tokenizer/unicode.h"

namespace moe::tokenizer_internal {

using nlohmann::json;

std::string ComponentType(const json& j) {
  return j.contains("type") ? j.at("type").get<std::string>() : std::string("(no type)");
}

absl::Status UnsupportedComponent(std::string_view stage, const json& j) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported ", unicode::ToAbsl(stage), " type '", ComponentType(j), "'"));
}

char32_t FirstChar(std::string_view s) {
  if (s.empty()) return 0;
  size_t i = 0;
  return unicode::DecodeNext(s, i);
}

absl::StatusOr<Pattern> Pattern::FromJson(const json& j) {
  Pattern p;
  if (j.contains("String")) {
    p.literal_ = j.at("String").get<std::string>();
  } else if (j.contains("Regex")) {
    MOE_ASSIGN_OR_RETURN(unicode::Regex re,
                         unicode::Regex::Compile(j.at("Regex").get<std::string>()));
    p.regex_ = std::move(re);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern is neither String nor Regex: ", j.dump()));
  }
  return p;
}

std::vector<std::pair<size_t, size_t>> Pattern::FindAll(std::string_view text) const {
  if (regex_) return regex_->FindAll(text);
  std::vector<std::pair<size_t, size_t>> out;
  if (literal_.empty()) return out;
  for (size_t pos = text.find(literal_); pos != std::string_view::npos;
       pos = text.find(literal_, pos + literal_.size())) {
    out.emplace_back(pos, pos + literal_.size());
  }
  return out;
}

std::string Pattern::ReplaceAll(std::string_view text, std::string_view content) const {
  std::string out;
  size_t prev = 0;
  for (const auto& [s, e] : FindAll(text)) {
    out.append(text.substr(prev, s - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

absl::StatusOr<PrependScheme> ParsePrependScheme(const json& j) {
  std::string scheme = j.value("prepend_scheme", std::string("always"));
  if (j.contains("add_prefix_space") && j.at("add_prefix_space").is_boolean() &&
      !j.at("add_prefix_space").get<bool>()) {
    scheme = "never";
  }
  if (scheme == "always") return PrependScheme::kAlways;
  if (scheme == "first") return PrependScheme::kFirst;
  if (scheme == "never") return PrependScheme::kNever;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported Metaspace prepend_scheme '", scheme, "'"));
}

namespace {

using Span = std::pair<size_t, size_t>;

// ---------------------------------------------------------------------------------------
// Normalizers

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(unicode::NormalizationForm form) : form_(form) {}
  std::string Normalize(std::string_view text) const override {
    return unicode::Normalize(text, form_);
  }

 private:
  unicode::NormalizationForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string_view text) const override { return unicode::Lowercase(text); }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(std::string_view text) const override {
    std::string s(text);
    for (const auto& p : parts_) s = p->Normalize(s);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  // Like `tokenizers`, an empty string stays empty.
  std::string Normalize(std::string_view text) const override {
    return text.empty() ? std::string() : absl::StrCat(prefix_, unicode::ToAbsl(text));
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Normalize(std::string_view text) const override {
    return pattern_.ReplaceAll(text, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string_view text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t i = begin;
        if (!unicode::IsWhitespace(unicode::DecodeNext(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!unicode::IsWhitespace(unicode::DecodeNext(text, i))) break;
        end = start;
      }
    }
    return std::string(text.substr(begin, end - begin));
  }

 private:
  bool left_, right_;
};

// ---------------------------------------------------------------------------------------
// Pre-tokenizers

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unsupported split behavior '", name, "'"));
}

// `tokenizers`' NormalizedString::split: `matches` (sorted, non-overlapping) cut `text`
// into segments covering it, flagged as match or not (flipped by `invert`); `behavior`
// says where the matches go. Empty results are dropped.
void SplitPiece(const Piece& piece, const std::vector<Span>& matches, SplitBehavior behavior,
                bool invert, std::vector<Piece>& out) {
  const std::string& text = piece.text;
  std::vector<std::pair<Span, bool>> segs;
  if (text.empty()) return;
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) segs.push_back({{prev, s}, invert});
    segs.push_back({{s, e}, !invert});
    prev = e;
  }
  if (prev != text.size()) segs.push_back({{prev, text.size()}, invert});

  std::vector<Span> keep;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& [span, is_match] : segs) {
        if (!is_match) keep.push_back(span);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const auto& seg : segs) keep.push_back(seg.first);
      break;
    case SplitBehavior::kContiguous:
      for (const auto& [span, is_match] : segs) {
        if (is_match == previous_match && !keep.empty()) {
          keep.back().second = span.second;
        } else {
          keep.push_back(span);
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& [span, is_match] : segs) {
        if (is_match && !previous_match && !keep.empty()) {
          keep.back().second = span.second;
        } else {
          keep.push_back(span);
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        const auto& [span, is_match] = *it;
        if (is_match && !previous_match && !keep.empty()) {
          keep.back().first = span.first;
        } else {
          keep.push_back(span);
        }
        previous_match = is_match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
  }
  for (const auto& [s, e] : keep) {
    if (s == e) continue;
    out.push_back(Piece{text.substr(s, e - s), piece.at_start && s == 0});
  }
}

// Matches of single characters satisfying `pred`, each its own match.
std::vector<Span> CharMatches(std::string_view text, const std::function<bool(char32_t)>& pred) {
  std::vector<Span> out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = i;
    if (pred(unicode::DecodeNext(text, i))) out.emplace_back(start, i);
  }
  return out;
}

template <typename FindFn>
void SplitAll(std::vector<Piece>& pieces, FindFn find, SplitBehavior behavior, bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (const Piece& p : pieces) SplitPiece(p, find(p.text), behavior, invert, out);
  pieces = std::move(out);
}

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::optional<unicode::Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces) {
        if (!p.text.starts_with(' ')) p.text.insert(p.text.begin(), ' ');
      }
    }
    if (regex_) {
      SplitAll(
          pieces, [&](std::string_view t) { return regex_->FindAll(t); }, SplitBehavior::kIsolated,
          false);
    }
    for (Piece& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += ByteToChar(static_cast<uint8_t>(c));
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::optional<unicode::Regex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    SplitAll(
        pieces, [&](std::string_view t) { return pattern_.FindAll(t); }, behavior_, invert_);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    SplitAll(
        pieces, [](std::string_view t) { return CharMatches(t, unicode::IsNumeric); },
        individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
  }

 private:
  bool individual_;
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void PreTokenize(std::vector<Piece>& pieces) const override {
    SplitAll(
        pieces, [](std::string_view t) { return CharMatches(t, unicode::IsWhitespace); },
        SplitBehavior::kRemoved, false);
  }
};

// `tokenizers`' Whitespace: keeps the matches of \w+|[^\w\s]+.
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  explicit WhitespacePreTokenizer(unicode::Regex regex) : regex_(std::move(regex)) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    SplitAll(
        pieces, [&](std::string_view t) { return regex_.FindAll(t); }, SplitBehavior::kRemoved,
        true);
  }

 private:
  unicode::Regex regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)),
        replacement_cp_(FirstChar(replacement_)),
        scheme_(scheme),
        split_(split) {}
  void PreTokenize(std::vector<Piece>& pieces) const override {
    for (Piece& p : pieces) {
      p.text = absl::StrReplaceAll(p.text, {{" ", replacement_}});
      const bool prepend =
          !p.text.starts_with(replacement_) &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start));
      if (prepend) p.text.insert(0, replacement_);
    }
    if (split_) {
      SplitAll(
          pieces,
          [&](std::string_view t) {
            return CharMatches(t, [&](char32_t c) { return c == replacement_cp_; });
          },
          SplitBehavior::kMergedWithNext, false);
    }
  }

 private:
  std::string replacement_;
  char32_t replacement_cp_;
  PrependScheme scheme_;
  bool split_;
};

}  // namespace

const std::string& ByteToChar(uint8_t b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    char32_t next = 256;
    for (int v = 0; v < 256; ++v) {
      const bool printable = (v >= '!' && v <= '~') || (v >= 0xA1 && v <= 0xAC) || (v >= 0xAE);
      unicode::AppendUtf8(printable ? static_cast<char32_t>(v) : next++, t[v]);
    }
    return t;
  }();
  return table[b];
}

std::optional<uint8_t> CharToByte(char32_t cp) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t;
    t.fill(-1);
    for (int v = 0; v < 256; ++v) {
      size_t i = 0;
      t[unicode::DecodeNext(ByteToChar(static_cast<uint8_t>(v)), i)] = static_cast<int16_t>(v);
    }
    return t;
  }();
  if (cp >= table.size() || table[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(table[cp]);
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& j) {
  const std::string type = ComponentType(j);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(unicode::NormalizationForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(j.value("strip_left", true),
                                             j.value("strip_right", true));
  }
  if (type == "Replace") {
    MOE_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern),
                                               j.at("content").get<std::string>());
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const json& part : j.at("normalizers")) {
      MOE_ASSIGN_OR_RETURN(auto p, MakeNormalizer(part));
      parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  return UnsupportedComponent("normalizer", j);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& j) {
  const std::string type = ComponentType(j);
  if (type == "ByteLevel") {
    std::optional<unicode::Regex> regex;
    if (j.value("use_regex", true)) {
      MOE_ASSIGN_OR_RETURN(regex, unicode::Regex::Compile(kGpt2Pattern));
    }
    return std::make_unique<ByteLevelPreTokenizer>(j.value("add_prefix_space", true),
                                                   std::move(regex));
  }
  if (type == "Split") {
    MOE_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    MOE_ASSIGN_OR_RETURN(SplitBehavior behavior,
                         ParseBehavior(j.at("behavior").get<std::string>()));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior,
                                               j.value("invert", false));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const json& part : j.at("pretokenizers")) {
      MOE_ASSIGN_OR_RETURN(auto p, MakePreTokenizer(part));
      parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Digits")
    return std::make_unique<DigitsPreTokenizer>(j.value("individual_digits", false));
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Whitespace") {
    MOE_ASSIGN_OR_RETURN(unicode::Regex regex, unicode::Regex::Compile(R"(\w+|[^\w\s]+)"));
    return std::make_unique<WhitespacePreTokenizer>(std::move(regex));
  }
  if (type == "Metaspace") {
    MOE_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j));
    return std::make_unique<MetaspacePreTokenizer>(j.value("replacement", std::string("\u2581")),
                                                   scheme, j.value("split", true));
  }
  return UnsupportedComponent("pre_tokenizer", j);
}

}  // namespace moe::tokenizer_internal
