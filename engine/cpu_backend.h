// The CPU backend: the ops of engine/backend.h on kernels/cpu, with their instruction set
// chosen at run time (kernels/cpu/isa.h). It is the oracle every other backend is tested
// against. Weights are packed into kPanels16; everything lives in host memory.
#pragma once

#include <memory>

#include "engine/backend.h"

namespace moe {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  const char* name() const override { return "cpu"; }
  std::string kernel_path() const override;
  std::string description() const override;
  kernels::WeightLayout weight_layout() const override { return kernels::WeightLayout::kPanels16; }
  MemoryKind compute_memory() const override { return MemoryKind::kHost; }

  absl::StatusOr<Buffer> Allocate(MemoryKind kind, size_t bytes) override;
  absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  absl::Status CopyToHostAsync(void* host_dst, const void* src, size_t bytes) override {
    return CopyToHost(host_dst, src, bytes);
  }
  absl::Status Memset(void* dst, int value, size_t bytes) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status Embedding(const kernels::EmbeddingParams& p) override;
  absl::Status Linear(const kernels::LinearParams& p) override;
  absl::Status LinearBatch(std::span<const kernels::LinearParams> p) override;
  absl::Status RmsNorm(const kernels::RmsNormParams& p) override;
  absl::Status Rope(const kernels::RopeParams& p) override;
  absl::Status KvWrite(const kernels::KvWriteParams& p) override;
  absl::Status PagedAttention(const kernels::PagedAttentionParams& p) override;
  absl::Status SiluMul(const kernels::SiluMulParams& p) override;
  absl::Status Add(const kernels::AddParams& p) override;
  absl::Status Clamp(const kernels::ClampParams& p) override;
  absl::Status SigmoidGatedAdd(const kernels::SigmoidGatedAddParams& p) override;
  absl::Status Gating(const kernels::GatingParams& p) override;
  absl::Status Dispatch(const kernels::DispatchParams& p) override;
  absl::Status ExpertFfn(const kernels::ExpertFfnParams& p) override;
  absl::Status Combine(const kernels::CombineParams& p) override;
  absl::Status ArgMax(const kernels::ArgMaxParams& p) override;
  absl::Status Sample(const kernels::SampleParams& p) override;
  absl::Status SelfContrastRows(const kernels::SelfContrastRowsParams& p) override;
};

}  // namespace moe
