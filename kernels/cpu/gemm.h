// The CPU GEMM: y[M, N] = x[M, K] * W[N, K]^T (+ bias) with fp32 activations and
// accumulation and W in the packed kPanels16 layout, fp32 or bf16 (widened exactly in
// registers). Each output element is one fused multiply-add chain over k = 0..K-1, so a
// row's result never depends on how many other rows run with it (batch invariance), and
// bf16 weights give bit for bit what their fp32 widening gives. Threads split the output
// columns (and, for tall problems, the rows); the instruction set is chosen at run time
// (kernels/cpu/isa.h).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "kernels/params.h"

namespace moe::kernels::cpu {

// Checks every limit Linear assumes: buffers set, a kPanels16 weight of a supported
// dtype, 1 <= K, N < 2^31, ldx >= K, ldy >= N, m >= 0.
absl::Status CanImplement(const LinearParams& p);

void Linear(const LinearParams& p);

// Independent Linears in one parallel region: the experts of a MoE layer, or q, k and v.
// Work is split by cost (rows x columns x K) so the threads finish together.
void LinearBatch(std::span<const LinearParams> problems);

// ------------------------------------------------------------------------------ packing

// The element type of a row-major source matrix (a checkpoint tensor).
enum class SourceType { kF32, kF16, kBF16 };

struct PackSource {
  const void* data = nullptr;  // [rows, K] row-major
  SourceType type = SourceType::kF32;
  int64_t rows = 0;
};

// Packs the sources, stacked in order into one [sum(rows), K] matrix, into the kPanels16
// layout of `dtype` at `out` (MatrixBytes(dtype, kPanels16, sum(rows), K) bytes). f16 and
// bf16 widen to f32 exactly; f32 and f16 narrow to bf16 round-to-nearest-even. Padding is
// zero. Threads split the panels.
void PackPanels(std::span<const PackSource> sources, int64_t K, DType dtype, void* out);

// Row-major conversions (embeddings, norms, biases, CUDA uploads).
void ConvertRows(const void* src, SourceType type, int64_t n, DType dtype, void* dst);
void ToFloat(const void* src, SourceType type, int64_t n, float* dst);

// bf16 <-> fp32 scalars. FloatToBf16 rounds to nearest even and keeps NaN a NaN.
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t h);
float HalfToFloat(uint16_t h);

}  // namespace moe::kernels::cpu
