// Decoders and post-processors of a tokenizer.json (see tokenizer_pipeline.h).
#include "tokenizer/tokenizer_pipeline.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/status_macros.h"
#include "tokenizer/unicode.h"

namespace moe::tokenizer_internal {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Decoders

class ByteLevelDecoder : public Decoder {
 public:
  // All tokens become one string of bytes; a token with a character outside the byte
  // alphabet (e.g. an added token) contributes its UTF-8 bytes unchanged.
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      bool all_mapped = true;
      size_t i = 0;
      while (i < t.size()) {
        const std::optional<uint8_t> b = CharToByte(unicode::DecodeNext(t, i));
        if (!b) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(*b));
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes.append(t);
      }
    }
    tokens.assign(1, unicode::Utf8Lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, PrependScheme scheme)
      : replacement_(replacement), scheme_(scheme) {}
  // Replacement characters become spaces, except in the first token (when a prefix is
  // prepended) where they are dropped.
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string out;
      size_t i = 0;
      while (i < t.size()) {
        const size_t start = i;
        if (unicode::DecodeNext(t, i) == replacement_) {
          if (!(k == 0 && scheme_ != PrependScheme::kNever)) out.push_back(' ');
        } else {
          out.append(t, start, i - start);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = pattern_.ReplaceAll(t, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become their bytes when those are valid UTF-8, else one U+FFFD
// per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (unicode::IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back(unicode::kReplacementChar);
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      if (std::optional<uint8_t> b = ParseByteToken(t)) {
        pending.push_back(static_cast<char>(*b));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static std::optional<uint8_t> ParseByteToken(std::string_view t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t.back() != '>') return std::nullopt;
    int value = 0;
    for (char c : t.substr(3, 2)) {
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return std::nullopt;
      }
      value = value * 16 + d;
    }
    return static_cast<uint8_t>(value);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& t : tokens) joined += t;
    tokens.assign(1, std::move(joined));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters of each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<size_t> bounds;  // byte offset of each character, then t.size()
      size_t i = 0;
      std::vector<char32_t> chars;
      while (i < t.size()) {
        bounds.push_back(i);
        chars.push_back(unicode::DecodeNext(t, i));
      }
      bounds.push_back(t.size());
      size_t begin = 0;
      while (begin < start_ && begin < chars.size() && chars[begin] == content_) ++begin;
      size_t end = chars.size();
      for (size_t k = 0; k < stop_ && end > begin && chars[end - 1] == content_; ++k) --end;
      t = t.substr(bounds[begin], bounds[end] - bounds[begin]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// `tokenizers`' BPEDecoder: the end-of-word suffix becomes a space (nothing at the end).
class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      tokens[k] = absl::StrReplaceAll(tokens[k], {{suffix_, k + 1 == tokens.size() ? "" : " "}});
    }
  }

 private:
  std::string suffix_;
};

// ---------------------------------------------------------------------------------------
// Post-processors

class FixedPostProcessor : public PostProcessor {
 public:
  FixedPostProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void Process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }
  std::vector<int32_t> Prefix() const override { return prefix_; }
  std::vector<int32_t> Suffix() const override { return suffix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void Process(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts_) p->Process(ids);
  }
  std::vector<int32_t> Prefix() const override {
    std::vector<int32_t> out;
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) {
      std::vector<int32_t> p = (*it)->Prefix();
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  }
  std::vector<int32_t> Suffix() const override {
    std::vector<int32_t> out;
    for (const auto& p : parts_) {
      std::vector<int32_t> s = p->Suffix();
      out.insert(out.end(), s.begin(), s.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeTemplate(const json& j) {
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (const json& item : j.at("single")) {
    if (item.contains("Sequence")) {
      if (seen_sequence) {
        return absl::InvalidArgumentError("TemplateProcessing single template repeats $A");
      }
      seen_sequence = true;
    } else if (item.contains("SpecialToken")) {
      const std::string name = item.at("SpecialToken").at("id").get<std::string>();
      const json& special = j.at("special_tokens");
      if (!special.contains(name)) {
        return absl::InvalidArgumentError(absl::StrCat("TemplateProcessing names special token '",
                                                       name, "' missing from special_tokens"));
      }
      for (const json& id : special.at(name).at("ids")) {
        (seen_sequence ? suffix : prefix).push_back(id.get<int32_t>());
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "TemplateProcessing item is neither Sequence nor SpecialToken: ", item.dump()));
    }
  }
  return std::make_unique<FixedPostProcessor>(std::move(prefix), std::move(suffix));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& j) {
  const std::string type = ComponentType(j);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    MOE_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j));
    return std::make_unique<MetaspaceDecoder>(
        FirstChar(j.value("replacement", std::string("\u2581"))), scheme);
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const json& part : j.at("decoders")) {
      MOE_ASSIGN_OR_RETURN(auto p, MakeDecoder(part));
      parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "Replace") {
    MOE_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), j.at("content").get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(FirstChar(j.at("content").get<std::string>()),
                                          j.value("start", size_t{0}), j.value("stop", size_t{0}));
  }
  if (type == "BPEDecoder")
    return std::make_unique<BpeDecoder>(j.value("suffix", std::string("</w>")));
  return UnsupportedComponent("decoder", j);
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const json& j) {
  const std::string type = ComponentType(j);
  if (type == "TemplateProcessing") return MakeTemplate(j);
  if (type == "ByteLevel")
    return std::make_unique<FixedPostProcessor>(std::vector<int32_t>{}, std::vector<int32_t>{});
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    // "cls": [token, id], "sep": [token, id]; a single sequence is cls A sep.
    return std::make_unique<FixedPostProcessor>(
        std::vector<int32_t>{j.at("cls").at(1).get<int32_t>()},
        std::vector<int32_t>{j.at("sep").at(1).get<int32_t>()});
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const json& part : j.at("processors")) {
      MOE_ASSIGN_OR_RETURN(auto p, MakePostProcessor(part));
      parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  return UnsupportedComponent("post_processor", j);
}

}  // namespace moe::tokenizer_internal
