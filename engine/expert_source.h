// How a MoE layer reaches its routed experts' weights (DESIGN.md sections 1a and 5). The
// layer routes its tokens first, then asks the source for the experts that got rows; the
// source makes them readable by the backend and keeps them so until Release. Resident
// weights (ResidentExperts) are today's case; the SE-MoE offload ring is the other
// implementation, streaming experts into a ring of device slots.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/params.h"

namespace moe {

class ModelWeights;

// The experts of one layer, as the backend's ExpertFfn reads them. Entries of experts
// without rows may have data == nullptr.
struct ExpertWeights {
  std::span<const kernels::MatrixRef> gate_up;  // [E] -> [2I, H]
  std::span<const kernels::MatrixRef> down;     // [E] -> [H, I]
};

class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  // Whether Acquire reads expert_offsets. If not, a device backend's MoE layer does not
  // wait for the plan: the offsets Acquire gets may not have arrived yet.
  virtual bool needs_host_plan() const { return true; }
  // Makes every expert e with rows (expert_offsets[e + 1] > expert_offsets[e], host
  // [E + 1]) readable until Release(layer). Each layer is acquired at most once at a time.
  virtual absl::StatusOr<ExpertWeights> Acquire(int layer,
                                                std::span<const int32_t> expert_offsets) = 0;
  // The layer's step is done with the weights Acquire returned.
  virtual void Release(int layer) = 0;
  // A hint that `layer` is acquired next: a streaming source starts its copies.
  virtual void Prefetch(int layer) = 0;
};

// Every expert resident for the life of the weights: Acquire returns them, the rest are
// no-ops.
class ResidentExperts final : public ExpertSource {
 public:
  explicit ResidentExperts(const ModelWeights& weights);
  // Experts given directly, [layer][expert] (the layer benchmark, tests).
  ResidentExperts(std::vector<std::vector<kernels::MatrixRef>> gate_up,
                  std::vector<std::vector<kernels::MatrixRef>> down);

  bool needs_host_plan() const override { return false; }
  absl::StatusOr<ExpertWeights> Acquire(int layer,
                                        std::span<const int32_t> expert_offsets) override;
  void Release(int) override {}
  void Prefetch(int) override {}

 private:
  std::vector<std::vector<kernels::MatrixRef>> gate_up_, down_;  // [layer][expert]
};

}  // namespace moe
