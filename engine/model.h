// The model runner: weights of a supported architecture and the forward pass over one
// flat batch (DESIGN.md sections 2-3). CPU backend, fp32 compute.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/batch.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"

namespace moe {

class Checkpoint;

class Model {
 public:
  // Reads every tensor the architecture needs from `checkpoint` as fp32, checking
  // shapes. Errors name the tensor and its file.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelConfig& config,
                                                     const Checkpoint& checkpoint);
  ~Model();

  const ModelConfig& config() const;
  int64_t num_parameters() const;
  // The KV cache shape for `num_blocks` blocks of this model.
  KvCacheShape KvShape(int num_blocks) const;

  // Runs one step: writes the batch's K/V into `kv` and fills `out`. InvalidArgument for
  // a malformed batch (token id outside the vocabulary, position past
  // max_position_embeddings, missing block table, out-of-order tokens). Not thread-safe:
  // one engine thread owns the model.
  absl::Status Forward(const Batch& batch, KvCacheView& kv, ForwardOutput* out);

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
