#include "engine/kv_cache.h"

#include <memory>
#include <new>

#include "absl/strings/str_cat.h"

namespace moe {

int64_t KvCacheShape::BytesPerBlock() const {
  return int64_t{2} * num_layers * block_size * num_kv_heads * head_dim * sizeof(float);
}

absl::StatusOr<std::unique_ptr<HostKvCache>> HostKvCache::Create(const KvCacheShape& shape) {
  if (shape.num_layers < 1 || shape.num_kv_heads < 1 || shape.head_dim < 1 ||
      shape.block_size < 1 || shape.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache: every dimension must be positive");
  }
  std::unique_ptr<HostKvCache> cache(new HostKvCache(shape));
  const size_t floats =
      static_cast<size_t>(shape.BytesPerBlock() / sizeof(float)) * shape.num_blocks;
  try {
    cache->storage_.assign(floats, 0.f);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", floats * sizeof(float), " bytes"));
  }
  cache->free_.reserve(shape.num_blocks);
  for (int32_t b = shape.num_blocks - 1; b >= 0; --b) cache->free_.push_back(b);
  return cache;
}

float* HostKvCache::Keys(int layer) {
  const size_t per = static_cast<size_t>(shape_.num_blocks) * shape_.block_size *
                     shape_.num_kv_heads * shape_.head_dim;
  return storage_.data() + (static_cast<size_t>(layer) * 2) * per;
}

float* HostKvCache::Values(int layer) {
  const size_t per = static_cast<size_t>(shape_.num_blocks) * shape_.block_size *
                     shape_.num_kv_heads * shape_.head_dim;
  return storage_.data() + (static_cast<size_t>(layer) * 2 + 1) * per;
}

std::optional<int32_t> HostKvCache::AllocateBlock() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void HostKvCache::FreeBlock(int32_t block) { free_.push_back(block); }

bool HostKvCache::EnsureCapacity(std::vector<int32_t>* table, int num_tokens) {
  const int needed = (num_tokens + shape_.block_size - 1) / shape_.block_size;
  const int missing = needed - static_cast<int>(table->size());
  if (missing <= 0) return true;
  if (missing > num_free_blocks()) return false;
  for (int i = 0; i < missing; ++i) table->push_back(*AllocateBlock());
  return true;
}

void HostKvCache::FreeAll(std::vector<int32_t>* table) {
  for (int32_t b : *table) FreeBlock(b);
  table->clear();
}

}  // namespace moe
