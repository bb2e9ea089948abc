// The default model's tokenizer (byte-level BPE) on arbitrary bytes: Encode refuses
// invalid UTF-8 with a status, and valid text decodes back to itself; arbitrary ids
// decode, and the incremental decoder's pieces add up to the whole decode.
#include <memory>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "tokenizer/tokenizer.h"

namespace {
const moe::Tokenizer& DefaultTokenizer() {
  static const std::unique_ptr<moe::Tokenizer> tokenizer = [] {
    const std::string dir = moe::fuzz::DefaultModelDir();
    auto t = moe::Tokenizer::FromFiles(dir + "/tokenizer.json", dir + "/tokenizer_config.json");
    if (!t.ok()) __builtin_trap();
    return *std::move(t);
  }();
  return *tokenizer;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const moe::Tokenizer& tokenizer = DefaultTokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
  bool ascii = true;
  for (size_t i = 0; i < size; ++i) ascii &= data[i] < 0x80 && data[i] != 0;
  if (ids.ok() && ascii && text.find("<|") == std::string_view::npos) {
    // Byte-level BPE is lossless on ASCII (which NFC leaves alone) without added tokens.
    if (tokenizer.Decode(*ids, /*skip_special_tokens=*/false) != text) __builtin_trap();
  }
  // The bytes as ids (two bytes each), in range and out of it.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 1 < size; i += 2) raw.push_back((data[i] << 8 | data[i + 1]) % 4200);
  const std::string whole = tokenizer.Decode(raw, false);
  moe::IncrementalDecoder incremental(tokenizer, false);
  std::string pieces;
  for (int32_t id : raw) pieces += incremental.Push(id);
  pieces += incremental.Flush();
  if (pieces != whole) __builtin_trap();  // IncrementalDecoder's contract
  (void)tokenizer.Decode(raw, /*skip_special_tokens=*/true);
  return 0;
}
