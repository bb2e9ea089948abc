// A model's weights as objects with a dtype, a layout and a placement, decided once at
// load (DESIGN.md section 1a) from the options: the backend (its layout: packed panels
// on the CPU), the dtype (the checkpoint's own by default; bf16 is never widened unless
// asked) and the device memory budget. Each tensor is read from the checkpoint file with
// large sequential reads into a staging buffer and copied once into the backend's layout;
// the file is never mapped for reading, so peak memory stays near the size of the weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_config.h"
#include "kernels/params.h"

namespace moe {

class Checkpoint;

// --dtype: the weights' dtype in memory.
enum class WeightDtype {
  kAuto,      // the checkpoint's: bf16 stays bf16, f32 stays f32, f16 widens to f32
  kFloat32,   // widen (or keep) every weight as fp32
  kBfloat16,  // keep bf16; f32 and f16 weights are rounded to bf16 (nearest even)
};
// "auto", "float32" ("fp32", "f32"), "bfloat16" ("bf16"); InvalidArgument otherwise.
absl::StatusOr<WeightDtype> ParseWeightDtype(std::string_view name);
const char* WeightDtypeName(WeightDtype dtype);

enum class Placement {
  kResident,  // in the backend's compute memory for the life of the model
  kStreamed,  // in host memory, streamed through the offload ring (DESIGN.md section 5)
};
const char* PlacementName(Placement placement);

struct LoadOptions {
  // The backend: "cpu", "cuda" (device 0; FailedPrecondition without one or in a build
  // without CUDA), or "auto": cuda where this build has it and a device is present, else
  // cpu. The library's default is cpu (the oracle); moe-server and moe-generate default to
  // auto (--device).
  std::string device = "cpu";
  WeightDtype dtype = WeightDtype::kAuto;
  // Bytes of device memory the weights may use; 0: no limit. On the CPU backend every
  // weight is resident whatever the budget.
  int64_t device_memory_budget = 0;
};

// One weight matrix, readable by the backend's Linear.
struct Weight {
  kernels::MatrixRef ref;
  Placement placement = Placement::kResident;
  explicit operator bool() const { return ref.data != nullptr; }
};

struct LayerWeights {
  bool is_moe = false;
  // fp32 vectors in compute memory; nullptr when the architecture has none.
  const float* input_norm = nullptr;  // [H]
  const float* post_norm = nullptr;   // [H]
  const float* q_norm = nullptr;      // [D] (per head) or [Hq*D] (full width)
  const float* k_norm = nullptr;      // [D] or [Hkv*D]
  const float* bq = nullptr;          // [Hq*D]
  const float* bk = nullptr;          // [Hkv*D]
  const float* bv = nullptr;          // [Hkv*D]
  const float* bo = nullptr;          // [H]
  Weight wq, wk, wv, wo;              // [Hq*D, H], [Hkv*D, H], [Hkv*D, H], [H, Hq*D]
  // MoE layers
  Weight router;                                    // [E, H]
  std::vector<Weight> experts_gate_up;              // [E] -> [2I, H]: gate rows, then up
  std::vector<Weight> experts_down;                 // [E] -> [H, I]
  Weight shared_gate_up, shared_down, shared_gate;  // [2Is, H], [H, Is], [1, H]
  // Dense MLP layers
  Weight mlp_gate_up, mlp_down;  // [2I, H], [H, I]
};

struct WeightStats {
  kernels::DType dtype = kernels::DType::kF32;
  int64_t num_parameters = 0;
  int64_t checkpoint_bytes = 0;  // bytes of the tensors read from the checkpoint
  int64_t resident_bytes = 0;    // bytes held resident, in the backend's layout
  int64_t streamed_bytes = 0;    // bytes streamed through the offload ring (0 today)
  int64_t expert_bytes = 0;      // of which routed experts
  double load_seconds = 0;
};

class ModelWeights {
 public:
  // Reads, checks and converts every tensor the architecture needs. Errors name the
  // tensor and its file (missing, wrong shape, unsupported dtype) or say what did not fit.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const ModelConfig& config,
                                                            const Checkpoint& checkpoint,
                                                            Backend& backend,
                                                            const LoadOptions& options);

  Weight embed;                       // [V, H]: row-major, or the LM head's own matrix when tied
  Weight lm_head;                     // [V, H]
  const float* final_norm = nullptr;  // [H]
  std::vector<LayerWeights> layers;

  const WeightStats& stats() const { return stats_; }
  // Bytes one routed expert's weights take (gate/up and down).
  int64_t expert_bytes(int layer, int expert) const;

 private:
  friend class WeightLoader;
  ModelWeights() = default;
  WeightStats stats_;
  std::vector<Buffer> storage_;  // owns every pointer above
};

}  // namespace moe
