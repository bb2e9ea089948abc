#include "tokenizer/tokenizer_bpe.h"

#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tokenizer/unicode.h"

namespace moe::tokenizer_internal {

absl::StatusOr<BpeModel> BpeModel::Create(
    StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
    BpeOptions options) {
  BpeModel model;
  model.options_ = std::move(options);
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("negative id for token ", token));
    max_id = std::max(max_id, id);
  }
  model.id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : vocab) model.id_to_token_[id] = token;
  model.vocab_ = std::move(vocab);
  for (int b = 0; b < 256; ++b) {
    auto it = model.vocab_.find(absl::StrFormat("<0x%02X>", b));
    model.byte_ids_[b] = it == model.vocab_.end() ? -1 : it->second;
  }
  if (model.options_.unk_token.has_value()) {
    auto it = model.vocab_.find(*model.options_.unk_token);
    if (it != model.vocab_.end()) model.unk_id_ = it->second;
  }
  model.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = model.vocab_.find(a);
    auto ib = model.vocab_.find(b);
    if (ia == model.vocab_.end() || ib == model.vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge #", rank, " (", a, " ", b, ") names a token not in the vocabulary"));
    }
    // As in `tokenizers`: the merged token drops the right side's continuing prefix.
    std::string_view right = b;
    if (model.options_.continuing_subword_prefix &&
        right.starts_with(*model.options_.continuing_subword_prefix)) {
      right.remove_prefix(model.options_.continuing_subword_prefix->size());
    }
    const std::string merged = absl::StrCat(a, unicode::ToAbsl(right));
    auto im = model.vocab_.find(merged);
    if (im == model.vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge #", rank, " (", a, " ", b, ") makes ",
                                                     merged, ", which is not in the vocabulary"));
    }
    // A repeated pair keeps its last rank, as a Rust HashMap built from the list does.
    model.merges_[PairKey(ia->second, ib->second)] =
        MergeInfo{static_cast<int32_t>(rank), im->second};
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::Tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per character, through byte fallback or unk when the character
  // is not a token (`tokenizers` BPE::merge_word).
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  int32_t pending_unk = -1;  // unk id waiting to be emitted (fused)
  std::string scratch;
  size_t i = 0;
  while (i < piece.size()) {
    const size_t start = i;
    i += std::min<size_t>(unicode::Utf8SequenceLength(static_cast<unsigned char>(piece[i])),
                          piece.size() - i);
    std::string_view ch = piece.substr(start, i - start);
    std::string_view key = ch;
    if ((start > 0 && options_.continuing_subword_prefix) ||
        (i == piece.size() && options_.end_of_word_suffix)) {
      scratch.clear();
      if (start > 0 && options_.continuing_subword_prefix)
        scratch = *options_.continuing_subword_prefix;
      scratch.append(ch);
      if (i == piece.size() && options_.end_of_word_suffix) scratch += *options_.end_of_word_suffix;
      key = scratch;
    }
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      if (pending_unk >= 0) {
        symbols.push_back(pending_unk);
        pending_unk = -1;
      }
      symbols.push_back(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : key) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As `tokenizers` does, a pending unk is not flushed before byte tokens.
        for (char c : key) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !options_.fuse_unk) symbols.push_back(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) symbols.push_back(pending_unk);

  // Merge the lowest-ranked adjacent pair first, leftmost on ties (`tokenizers`
  // Word::merge_all). Symbols form a doubly linked list; stale queue entries are skipped.
  const int n = static_cast<int>(symbols.size());
  if (n > 1 && !merges_.empty()) {
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (int k = 0; k < n; ++k) {
      prev[k] = k - 1;
      next[k] = k + 1 < n ? k + 1 : -1;
    }
    struct Entry {
      int32_t rank;
      int pos;
      int32_t new_id;
      bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
    for (int k = 0; k + 1 < n; ++k) {
      if (auto it = merges_.find(PairKey(symbols[k], symbols[k + 1])); it != merges_.end()) {
        queue.push({it->second.rank, k, it->second.new_id});
      }
    }
    while (!queue.empty()) {
      const Entry top = queue.top();
      queue.pop();
      if (!alive[top.pos] || next[top.pos] < 0) continue;
      const int right = next[top.pos];
      auto it = merges_.find(PairKey(symbols[top.pos], symbols[right]));
      if (it == merges_.end() || it->second.new_id != top.new_id) continue;
      symbols[top.pos] = top.new_id;
      alive[right] = false;
      next[top.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = top.pos;
      if (prev[top.pos] >= 0) {
        const int p = prev[top.pos];
        if (auto m = merges_.find(PairKey(symbols[p], symbols[top.pos])); m != merges_.end()) {
          queue.push({m->second.rank, p, m->second.new_id});
        }
      }
      if (next[top.pos] >= 0) {
        if (auto m = merges_.find(PairKey(symbols[top.pos], symbols[next[top.pos]]));
            m != merges_.end()) {
          queue.push({m->second.rank, top.pos, m->second.new_id});
        }
      }
    }
    for (int k = 0; k >= 0; k = next[k]) out.push_back(symbols[k]);
    return;
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

}  // namespace moe::tokenizer_internal
