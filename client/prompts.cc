#include "client/prompts.h"

#include <array>
#include <fstream>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"

namespace moe::client {
namespace {

// Short, common English words; most are a single token (with the leading space) in the
// GPT-2, Llama and Qwen BPE vocabularies.
constexpr std::array<const char*, 96> kWords = {
    "the",   "of",    "and",   "to",     "in",   "is",   "you",   "that",   "it",    "he",
    "was",   "for",   "on",    "are",    "as",   "with", "his",   "they",   "at",    "be",
    "this",  "have",  "from",  "or",     "one",  "had",  "by",    "word",   "but",   "not",
    "what",  "all",   "were",  "we",     "when", "your", "can",   "said",   "there", "use",
    "an",    "each",  "which", "she",    "do",   "how",  "their", "if",     "will",  "up",
    "other", "about", "out",   "many",   "then", "them", "these", "so",     "some",  "her",
    "would", "make",  "like",  "him",    "into", "time", "has",   "look",   "two",   "more",
    "write", "go",    "see",   "number", "no",   "way",  "could", "people", "my",    "than",
    "first", "water", "been",  "call",   "who",  "oil",  "its",   "now",    "find",  "long",
    "down",  "day",   "did",   "get",    "come", "made"};

// Uniform integer in [lo, hi] by rejection sampling, so the draw is the same on every
// standard library (std::uniform_int_distribution's algorithm is implementation-defined).
int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % span;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return lo + static_cast<int64_t>(x % span);
}

absl::Status CheckRange(const LengthRange& r, std::string_view name) {
  if (r.min < 1 || r.min > r.max) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(name), " range [", r.min, ", ", r.max,
                                                   "] must satisfy 1 <= min <= max"));
  }
  return absl::OkStatus();
}

absl::Status LineError(std::string_view source, int line, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(source), ":", line, ": ", ToAbsl(what)));
}

}  // namespace

absl::StatusOr<LengthRange> ParseLengthRange(std::string_view text) {
  const size_t colon = text.find(':');
  LengthRange r;
  bool ok;
  if (colon == std::string_view::npos) {
    ok = absl::SimpleAtoi(ToAbsl(text), &r.min);
    r.max = r.min;
  } else {
    ok = absl::SimpleAtoi(ToAbsl(text.substr(0, colon)), &r.min) &&
         absl::SimpleAtoi(ToAbsl(text.substr(colon + 1)), &r.max);
  }
  if (!ok || r.min < 1 || r.min > r.max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "length \"", ToAbsl(text), "\" must be N or MIN:MAX with integers 1 <= MIN <= MAX"));
  }
  return r;
}

absl::StatusOr<std::vector<PromptSpec>> SyntheticPrompts(const SyntheticPromptOptions& options) {
  if (options.num_prompts < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("number of prompts must be >= 0, got ", options.num_prompts));
  }
  if (absl::Status s = CheckRange(options.input_len, "input length"); !s.ok()) return s;
  if (absl::Status s = CheckRange(options.output_len, "output length"); !s.ok()) return s;
  std::mt19937_64 rng(options.seed);
  std::vector<PromptSpec> prompts(options.num_prompts);
  for (PromptSpec& p : prompts) {
    const int64_t words = UniformInt(rng, options.input_len.min, options.input_len.max);
    p.max_tokens =
        static_cast<int>(UniformInt(rng, options.output_len.min, options.output_len.max));
    for (int64_t w = 0; w < words; ++w) {
      if (w > 0) p.text += ' ';
      p.text += kWords[UniformInt(rng, 0, kWords.size() - 1)];
    }
  }
  return prompts;
}

absl::StatusOr<std::vector<PromptSpec>> ParsePromptsJsonl(std::istream& in, std::string_view source,
                                                          int default_max_tokens) {
  std::vector<PromptSpec> prompts;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range 406
      return LineError(source, line_no, absl::StrCat("not valid JSON: ", e.what()));
    }
    if (!j.is_object()) return LineError(source, line_no, "expected a JSON object");
    PromptSpec p;
    const char* prompt_key = j.contains("prompt") ? "prompt" : "text";
    if (!j.contains(prompt_key)) {
      return LineError(source, line_no, "missing \"prompt\" (or \"text\")");
    }
    const nlohmann::json& prompt = j[prompt_key];
    if (prompt.is_string()) {
      p.text = prompt.get<std::string>();
      if (p.text.empty()) return LineError(source, line_no, "empty prompt");
    } else if (prompt.is_array() && !prompt.empty()) {
      for (const nlohmann::json& id : prompt) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          return LineError(source, line_no, "prompt token ids must be non-negative integers");
        }
        p.token_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
    } else {
      return LineError(
          source, line_no,
          absl::StrCat("\"", prompt_key, "\" must be a non-empty string or array of token ids"));
    }
    const char* max_key = j.contains("max_tokens") ? "max_tokens" : "output_len";
    if (j.contains(max_key)) {
      const nlohmann::json& m = j[max_key];
      if (!m.is_number_integer() || m.get<int64_t>() < 1 ||
          m.get<int64_t>() > std::numeric_limits<int>::max()) {
        return LineError(source, line_no,
                         absl::StrCat("\"", max_key, "\" must be a positive integer"));
      }
      p.max_tokens = static_cast<int>(m.get<int64_t>());
    } else {
      p.max_tokens = default_max_tokens;
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(source), ": no prompts"));
  }
  return prompts;
}

absl::StatusOr<std::vector<PromptSpec>> ReadPromptsJsonl(const std::string& path,
                                                         int default_max_tokens) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open prompts file ", path));
  return ParsePromptsJsonl(in, path, default_max_tokens);
}

}  // namespace moe::client
