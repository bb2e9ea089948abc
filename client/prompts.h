// Prompts for the load tester: synthetic (seeded, with fixed or uniformly drawn input and
// output lengths) or read from a JSONL file. No I/O besides reading that file.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe::client {

// One request's input. `text` is sent as the prompt unless `token_ids` is non-empty (a JSONL
// prompt given as token ids). `max_tokens` 0 leaves the output length to the server.
struct PromptSpec {
  std::string text;
  std::vector<int32_t> token_ids;
  int max_tokens = 0;
};

// An inclusive range [min, max] from which a length is drawn uniformly; min == max is a
// fixed length. The CLI maps `--input-len N` to Fixed(N) and `--input-len-range MIN:MAX` to
// ParseLengthRange("MIN:MAX") (a range flag overrides the fixed one); likewise
// `--output-len` and `--output-len-range`.
struct LengthRange {
  int min = 0;
  int max = 0;

  static LengthRange Fixed(int n) { return {n, n}; }
  bool fixed() const { return min == max; }
};

// "N" -> [N, N]; "MIN:MAX" -> [MIN, MAX]. InvalidArgument unless the numbers are integers
// with 1 <= MIN <= MAX.
absl::StatusOr<LengthRange> ParseLengthRange(std::string_view text);

struct SyntheticPromptOptions {
  int num_prompts = 0;
  // Prompt length in words from a fixed list of common English words, each usually one
  // token (with its leading space) for BPE tokenizers, so about as many tokens as words.
  // Words are used because the client may not have the server's tokenizer.
  LengthRange input_len = LengthRange::Fixed(128);
  // max_tokens of each request; pair with --ignore-eos for exact output lengths.
  LengthRange output_len = LengthRange::Fixed(128);
  uint64_t seed = 0;
};

// `num_prompts` prompts of random words. The same options give the same prompts on every
// platform (std::mt19937_64 with our own unbiased integer draw, no implementation-defined
// distribution). InvalidArgument for a negative count or a range with min < 1 or min > max.
absl::StatusOr<std::vector<PromptSpec>> SyntheticPrompts(const SyntheticPromptOptions& options);

// One JSON object per line: {"prompt": "...", "max_tokens": N}. "text" is accepted for
// "prompt" and "output_len" for "max_tokens"; "prompt" may also be an array of token ids.
// A missing max_tokens takes `default_max_tokens`. Blank lines are skipped. Errors are
// InvalidArgument "SOURCE:LINE: what is wrong" (line numbers from 1), or for a stream with
// no prompts "SOURCE: no prompts".
absl::StatusOr<std::vector<PromptSpec>> ParsePromptsJsonl(std::istream& in, std::string_view source,
                                                          int default_max_tokens);

// ParsePromptsJsonl over the file at `path`; NotFound when it cannot be opened.
absl::StatusOr<std::vector<PromptSpec>> ReadPromptsJsonl(const std::string& path,
                                                         int default_max_tokens);

}  // namespace moe::client
