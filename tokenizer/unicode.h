// UTF-8 helpers, Unicode normalization (utf8proc) and a PCRE2 regex for the tokenizer.
// Everything here works on UTF-8 byte strings; offsets are byte offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/absl_compat.h"

namespace moe::unicode {

using ::moe::ToAbsl;

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past
// U+10FFFF).
bool IsValidUtf8(std::string_view s);

// `bytes` with every maximal ill-formed subsequence replaced by one U+FFFD, the
// "substitution of maximal subparts" of Unicode 3.9 / WHATWG, which Rust's
// String::from_utf8_lossy also follows.
std::string Utf8Lossy(std::string_view bytes);

// Length in bytes of the UTF-8 sequence starting with `lead`; 1 for an invalid lead byte.
// Precondition for decoding: the string is valid UTF-8.
int Utf8SequenceLength(unsigned char lead);

// Decodes the code point at byte offset `i` of valid UTF-8 `s` and advances `i`.
char32_t DecodeNext(std::string_view s, size_t& i);
void AppendUtf8(char32_t cp, std::string& out);

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };
// Normalizes valid UTF-8 `s`. Pure ASCII is returned unchanged without calling utf8proc.
std::string Normalize(std::string_view s, NormalizationForm form);
// Per code point simple lowercase mapping.
std::string Lowercase(std::string_view s);

// Unicode general category predicates (utf8proc's tables).
bool IsNumeric(char32_t cp);     // N*: Nd, Nl, No (Rust char::is_numeric)
bool IsWhitespace(char32_t cp);  // White_Space property (Rust char::is_whitespace)

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Immutable after Compile and
// safe to use from several threads at once.
class Regex {
 public:
  // InvalidArgument with PCRE2's message and offset when `pattern` does not compile.
  static absl::StatusOr<Regex> Compile(std::string_view pattern);

  // Non-overlapping matches [start, end) of valid UTF-8 `text`, left to right, with the
  // empty-match rules of the Rust regex / onig iterators the `tokenizers` library uses:
  // an empty match right after the previous match is skipped, and the search then
  // advances one character.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  struct Code;
  explicit Regex(std::shared_ptr<const Code> code) : code_(std::move(code)) {}
  std::shared_ptr<const Code> code_;
};

}  // namespace moe::unicode
