// Paged KV cache (DESIGN.md section 4), in two parts:
// - KvBlockPool: the host-side free list of block ids that leases hold (the scheduler's
//   block manager, scheduler/kv_lease.h, builds on it);
// - KvStorage: the K and V of every layer, allocated through the Backend (device memory on
//   a GPU backend), in the layout of kernels/params.h: K [num_blocks, kv_heads, head_dim,
//   B] (transposed per block), V [num_blocks, B, kv_heads, head_dim].
// The model reads and writes KvStorage; a sequence's block table names its blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moe {

inline constexpr int kKvBlockSize = 16;  // B: token slots per block

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = kKvBlockSize;
  int num_blocks = 0;

  // Bytes of K and V of one block over all layers (fp32).
  int64_t BytesPerBlock() const;
};

// Free block ids. Not thread-safe: the engine thread owns it.
class KvBlockPool {
 public:
  KvBlockPool(int num_blocks, int block_size);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  int num_free_blocks() const { return static_cast<int>(free_.size()); }

  // A free block id, or nullopt when none is left.
  std::optional<int32_t> AllocateBlock();
  void FreeBlock(int32_t block);
  // Grows `table` so it covers `num_tokens` positions; false (table unchanged) when the
  // pool runs out.
  bool EnsureCapacity(std::vector<int32_t>* table, int num_tokens);
  void FreeAll(std::vector<int32_t>* table);

 private:
  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;  // stack of free block ids
};

// The K/V storage of every layer.
class KvStorage {
 public:
  // Allocated and zeroed (so its memory is resident from the start). ResourceExhausted
  // when it does not fit; InvalidArgument for a non-positive dimension.
  static absl::StatusOr<std::unique_ptr<KvStorage>> Create(Backend& backend,
                                                           const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }
  float* Keys(int layer) const;
  float* Values(int layer) const;
  int64_t bytes() const { return static_cast<int64_t>(buffer_.bytes()); }

 private:
  KvStorage(const KvCacheShape& shape, Buffer buffer) : shape_(shape), buffer_(std::move(buffer)) {}
  KvCacheShape shape_;
  Buffer buffer_;  // [layers][K|V][num_blocks * B * Hkv * D]
};

// A pool and its storage, for callers that own a whole cache (tests, benchmarks).
struct KvCache {
  static absl::StatusOr<KvCache> Create(Backend& backend, const KvCacheShape& shape);
  std::unique_ptr<KvBlockPool> pool;
  std::unique_ptr<KvStorage> storage;
};

}  // namespace moe
