// The CUDA backend (built only with CUDA, target moe_cuda_backend): every op of
// engine/backend.h on kernels/cuda, row-major fp32 or bf16 weights, activations and the KV
// cache in device memory, one stream. Model::Load creates it for --device cuda (or auto
// where a device is present); tests create it directly.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moe {

// The backend on CUDA device `device`; FailedPrecondition without one.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device = 0);

}  // namespace moe
