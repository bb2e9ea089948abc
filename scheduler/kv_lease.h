// RAII lease on KV cache blocks: the block table of one sequence. Its blocks go back to
// the pool when the lease is released or destroyed (STYLE.md item 12).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/kv_cache.h"

namespace moe::sched {

class KvLease {
 public:
  explicit KvLease(KvBlockPool* cache) : cache_(cache) {}
  ~KvLease() { Release(); }
  KvLease(KvLease&& other) noexcept
      : cache_(other.cache_), blocks_(std::exchange(other.blocks_, {})) {}
  KvLease& operator=(KvLease&& other) noexcept {
    if (this != &other) {
      Release();
      cache_ = other.cache_;
      blocks_ = std::exchange(other.blocks_, {});
    }
    return *this;
  }
  KvLease(const KvLease&) = delete;
  KvLease& operator=(const KvLease&) = delete;

  // Grows the table to cover `num_tokens` positions; false (unchanged) if the pool is short.
  bool EnsureCapacity(int num_tokens) { return cache_->EnsureCapacity(&blocks_, num_tokens); }
  void Release() {
    if (cache_ != nullptr) cache_->FreeAll(&blocks_);
  }
  const int32_t* data() const { return blocks_.data(); }
  int num_blocks() const { return static_cast<int>(blocks_.size()); }

 private:
  KvBlockPool* cache_;
  std::vector<int32_t> blocks_;
};

}  // namespace moe::sched
