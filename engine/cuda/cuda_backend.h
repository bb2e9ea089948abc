// The CUDA backend (built only with CUDA, target moe_cuda_backend): the ops of
// engine/backend.h that kernels/cuda has today (Linear through cuBLAS, gating, dispatch,
// the expert FFN, combine), fp32 row-major weights in device memory. The other ops return
// Unimplemented: the whole forward on the GPU is the next step (DESIGN.md section 1a).
// moe_engine includes no CUDA header; only this target and its users do.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moe {

// The backend on CUDA device `device`; FailedPrecondition without one.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device = 0);

}  // namespace moe
