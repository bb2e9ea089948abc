// The model runner: a supported architecture's forward pass over one flat batch
// (DESIGN.md sections 2-3), written once over the Backend (engine/backend.h), with its
// weights (engine/weights.h) and its MoE layers' experts reached through an ExpertSource.
// The architecture variants (q/k norms, clip_qkv, biases, the shared-expert gate, dense
// layers) live here, above the Backend.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/batch.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "engine/weights.h"

namespace moe {

class Checkpoint;
class ExpertSource;

class Model {
 public:
  // Creates the backend named by options.device and loads the weights into it. Errors
  // name the tensor and its file, or the option that cannot be met.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelConfig& config,
                                                     const Checkpoint& checkpoint,
                                                     const LoadOptions& options = {});
  ~Model();

  const ModelConfig& config() const;
  Backend& backend() const;
  const ModelWeights& weights() const;
  int64_t num_parameters() const;
  // The KV cache shape for `num_blocks` blocks of this model.
  KvCacheShape KvShape(int num_blocks) const;

  // Runs one step: writes the batch's K/V into `kv` and fills `out`. InvalidArgument for
  // a malformed batch (token id outside the vocabulary, position past
  // max_position_embeddings, missing block table, out-of-order tokens). Not thread-safe:
  // one engine thread owns the model.
  absl::Status Forward(const Batch& batch, KvStorage& kv, ForwardOutput* out);

  // Decode steps replayed from a recorded graph (CUDA graphs; MOE_CUDA_GRAPHS=0 turns them
  // off), and shapes whose recording failed (they run eagerly).
  int64_t graph_replays() const;
  int64_t graph_failures() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
