// Paged KV cache (DESIGN.md section 4): K and V of every layer stored in fixed-size
// blocks of B token slots; a sequence owns a block table of block ids covering its
// positions. The model reads and writes through KvCacheView; the serving scheduler's
// block manager decides which blocks a sequence gets.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

inline constexpr int kKvBlockSize = 16;  // B: token slots per block

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = kKvBlockSize;
  int num_blocks = 0;

  // Bytes of K and V of one block over all layers.
  int64_t BytesPerBlock() const;
};

// What the model needs from a KV cache: per-layer base pointers of the block storage,
// laid out [num_blocks, block_size, num_kv_heads, head_dim] for K and the same for V.
class KvCacheView {
 public:
  virtual ~KvCacheView() = default;
  virtual const KvCacheShape& shape() const = 0;
  virtual float* Keys(int layer) = 0;
  virtual float* Values(int layer) = 0;
};

// Host-memory KV cache (CPU backend) with a free list of blocks. Not thread-safe: the
// engine thread owns it.
class HostKvCache : public KvCacheView {
 public:
  // ResourceExhausted when the blocks do not fit in memory.
  static absl::StatusOr<std::unique_ptr<HostKvCache>> Create(const KvCacheShape& shape);

  const KvCacheShape& shape() const override { return shape_; }
  float* Keys(int layer) override;
  float* Values(int layer) override;

  // A free block id, or nullopt when none is left.
  std::optional<int32_t> AllocateBlock();
  void FreeBlock(int32_t block);
  int num_free_blocks() const { return static_cast<int>(free_.size()); }

  // Grows `table` so it covers `num_tokens` positions; false (table unchanged) when
  // the pool runs out.
  bool EnsureCapacity(std::vector<int32_t>* table, int num_tokens);
  void FreeAll(std::vector<int32_t>* table);

 private:
  explicit HostKvCache(const KvCacheShape& shape) : shape_(shape) {}
  KvCacheShape shape_;
  std::vector<float> storage_;  // [layers][K|V][num_blocks * B * Hkv * D]
  std::vector<int32_t> free_;   // stack of free block ids
};

}  // namespace moe
