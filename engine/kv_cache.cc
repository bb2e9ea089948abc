#include "engine/kv_cache.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace moe {

int64_t KvCacheShape::BytesPerBlock() const {
  return int64_t{2} * num_layers * block_size * num_kv_heads * head_dim * sizeof(float);
}

KvBlockPool::KvBlockPool(int num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<int32_t> KvBlockPool::AllocateBlock() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void KvBlockPool::FreeBlock(int32_t block) { free_.push_back(block); }

bool KvBlockPool::EnsureCapacity(std::vector<int32_t>* table, int num_tokens) {
  const int needed = (num_tokens + block_size_ - 1) / block_size_;
  const int missing = needed - static_cast<int>(table->size());
  if (missing <= 0) return true;
  if (missing > num_free_blocks()) return false;
  for (int i = 0; i < missing; ++i) table->push_back(*AllocateBlock());
  return true;
}

void KvBlockPool::FreeAll(std::vector<int32_t>* table) {
  for (int32_t b : *table) FreeBlock(b);
  table->clear();
}

absl::StatusOr<std::unique_ptr<KvStorage>> KvStorage::Create(Backend& backend,
                                                             const KvCacheShape& shape) {
  if (shape.num_layers < 1 || shape.num_kv_heads < 1 || shape.head_dim < 1 ||
      shape.block_size < 1 || shape.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache: every dimension must be positive");
  }
  const int64_t bytes = shape.BytesPerBlock() * shape.num_blocks;
  absl::StatusOr<Buffer> buffer = backend.Allocate(backend.compute_memory(), bytes);
  if (!buffer.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", bytes, " bytes: ", buffer.status().message()));
  }
  // Zeroed now, so a step never waits for the kernel to fault in and clear a fresh page.
  MOE_RETURN_IF_ERROR(backend.Memset(buffer->data(), 0, buffer->bytes()));
  return std::unique_ptr<KvStorage>(new KvStorage(shape, *std::move(buffer)));
}

float* KvStorage::Keys(int layer) const {
  const size_t per = static_cast<size_t>(shape_.num_blocks) * shape_.block_size *
                     shape_.num_kv_heads * shape_.head_dim;
  return buffer_.as<float>() + (static_cast<size_t>(layer) * 2) * per;
}

float* KvStorage::Values(int layer) const {
  const size_t per = static_cast<size_t>(shape_.num_blocks) * shape_.block_size *
                     shape_.num_kv_heads * shape_.head_dim;
  return buffer_.as<float>() + (static_cast<size_t>(layer) * 2 + 1) * per;
}

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const KvCacheShape& shape) {
  KvCache cache;
  MOE_ASSIGN_OR_RETURN(cache.storage, KvStorage::Create(backend, shape));
  cache.pool = std::make_unique<KvBlockPool>(shape.num_blocks, shape.block_size);
  return cache;
}

}  // namespace moe
