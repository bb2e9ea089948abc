// The stages of a tokenizer.json around the model: normalizer, pre-tokenizer, decoder
// and post-processor, built from their JSON objects. Each mirrors the component of the
// same name in Hugging Face `tokenizers`; offsets are not tracked (only ids matter).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"
#include "tokenizer/unicode.h"

namespace moe::tokenizer_internal {

// A stretch of text between added tokens, and later one pre-token.
struct Piece {
  std::string text;
  // Begins at byte 0 of the original input (Metaspace prepend_scheme "first" prepends
  // only then, like `tokenizers`' offsets_original().0 == 0).
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; so is the result.
  virtual std::string Normalize(std::string_view text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits and rewrites every piece in place; drops empty pieces.
  virtual void PreTokenize(std::vector<Piece>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // `tokenizers`' Decoder::decode_chain: tokens in, tokens out; the caller joins them.
  virtual void DecodeChain(std::vector<std::string>& tokens) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence around `ids`.
  virtual void Process(std::vector<int32_t>& ids) const = 0;
  // Ids the processor puts before / after the sequence (for bos_id / eos_id).
  virtual std::vector<int32_t> Prefix() const { return {}; }
  virtual std::vector<int32_t> Suffix() const { return {}; }
};

// Each Make* takes a non-null JSON object. Unsupported "type" values are
// InvalidArgument naming the stage and the type; malformed fields throw
// nlohmann::json::exception, which the caller turns into an error naming the file.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& j);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& j);
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& j);
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const nlohmann::json& j);

// Shared by the Make* functions.

// The "type" of a component object, or "(no type)".
std::string ComponentType(const nlohmann::json& j);
// InvalidArgument "unsupported <stage> type '<type>'".
absl::Status UnsupportedComponent(std::string_view stage, const nlohmann::json& j);
// The first code point of `s`; 0 for an empty string.
char32_t FirstChar(std::string_view s);

// A Split / Replace pattern: {"String": literal} or {"Regex": PCRE2 pattern}.
class Pattern {
 public:
  static absl::StatusOr<Pattern> FromJson(const nlohmann::json& j);
  // Non-overlapping matches [start, end), left to right. An empty literal matches nothing.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;
  // `text` with every match replaced by `content`.
  std::string ReplaceAll(std::string_view text, std::string_view content) const;

 private:
  std::string literal_;
  std::optional<unicode::Regex> regex_;
};

// Metaspace "prepend_scheme" (a legacy "add_prefix_space": false means kNever).
enum class PrependScheme { kAlways, kFirst, kNever };
absl::StatusOr<PrependScheme> ParsePrependScheme(const nlohmann::json& j);

// GPT-2 byte <-> printable character mapping of the ByteLevel components.
const std::string& ByteToChar(uint8_t b);        // UTF-8 of the character for byte b
std::optional<uint8_t> CharToByte(char32_t cp);  // inverse; nullopt outside the alphabet

}  // namespace moe::tokenizer_internal
