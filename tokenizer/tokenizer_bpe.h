// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}): vocabulary, ranked
// merges, unk / byte_fallback handling. Mirrors `tokenizers`' models::bpe::BPE.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::tokenizer_internal {

// std::string-keyed map with std::string_view lookups. (std::unordered_map rather than
// absl::flat_hash_map: moe_engine does not link absl's hash libraries.)
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // `merges[i]` is the pair merged with rank i. InvalidArgument when a merge names a
  // token that is not in `vocab` or whose concatenation is not in `vocab`.
  static absl::StatusOr<BpeModel> Create(
      StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options);

  // Appends the ids of one pre-tokenized piece (valid UTF-8) to `out`.
  void Tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Tokens by id; empty optional for ids the vocabulary does not use.
  const std::vector<std::optional<std::string>>& id_to_token() const { return id_to_token_; }

 private:
  BpeModel() = default;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  StringMap<int32_t> vocab_;
  std::vector<std::optional<std::string>> id_to_token_;
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  std::unordered_map<uint64_t, MergeInfo> merges_;  // PairKey(left, right) -> merge
  int32_t byte_ids_[256];                           // <0xNN> ids, -1 when absent
  std::optional<int32_t> unk_id_;
  BpeOptions options_;
};

}  // namespace moe::tokenizer_internal
