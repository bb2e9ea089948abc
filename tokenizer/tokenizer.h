// Hugging Face tokenizer.json: byte-level BPE (GPT-2 / Qwen / OLMoE style, pre-tokenizer
// regex through PCRE2) and SentencePiece-style BPE with byte fallback (Llama / Mixtral
// style), with added and special tokens. Produces the same ids as the `tokenizers`
// library for the configurations those model families ship.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

class Tokenizer {
 public:
  // `tokenizer_json`: path of tokenizer.json. `tokenizer_config_json`: path of
  // tokenizer_config.json or empty; used for bos/eos token names and add_bos_token
  // where tokenizer.json's post-processor does not say. Unsupported model, normalizer,
  // pre-tokenizer, decoder or post-processor types are an InvalidArgument naming the file
  // and the type.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFiles(
      const std::string& tokenizer_json, const std::string& tokenizer_config_json = "");
  virtual ~Tokenizer();

  // Text -> ids. `add_special_tokens` applies the post-processor (e.g. a BOS token),
  // as `tokenizers`' encode(text, add_special_tokens=...) does. Added tokens found in the
  // text are matched first. Invalid UTF-8 input is InvalidArgument.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special_tokens) const = 0;
  // Ids -> text, as `tokenizers`' decode(ids, skip_special_tokens=...). Ids outside the
  // vocabulary decode to nothing. Byte sequences that are not valid UTF-8 become U+FFFD.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  // Number of ids, including added tokens (max id + 1).
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int32_t id) const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
};

// Streaming detokenizer: feed ids one at a time, get the text they add. Never returns a
// broken UTF-8 sequence: bytes of an incomplete character are held until it completes
// (or until Flush, which emits what is held as U+FFFD). The concatenation of all returned
// pieces equals tokenizer.Decode(all ids).
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);
  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_, read_offset_) give context
  size_t read_offset_ = 0;    // text of ids_[prefix_offset_, read_offset_) already emitted
};

}  // namespace moe
