// Run-time choice of the CPU kernels' instruction set (STYLE.md item 8: the kernel bodies
// are written once, kernels/cpu/isa_kernels.inc, and compiled once per instruction set).
// The same binary runs on any x86-64: AVX-512 where the CPU has F+BW+VL+DQ, else AVX2 with
// FMA, else portable C++. Results are batch-invariant within each instruction set; two
// instruction sets may differ in the last bits (the portable one has no FMA).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/params.h"

namespace moe::kernels::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

const char* IsaName(Isa isa);  // "generic", "avx2", "avx512"

// What this CPU offers, read once with cpuid.
struct CpuFeatures {
  std::string model;  // /proc/cpuinfo "model name", or "unknown"
  bool avx2_fma = false;
  bool avx512 = false;       // F, BW, VL, DQ
  bool avx512_bf16 = false;  // AVX512-BF16 (vcvtneps2bf16, vdpbf16ps)
  bool amx_bf16 = false;
};
const CpuFeatures& GetCpuFeatures();

// The best instruction set this CPU supports.
Isa BestIsa();
// The instruction set the kernels use now: $MOE_CPU_ISA (generic|avx2|avx512) when set
// and supported, else BestIsa().
Isa ActiveIsa();
// For tests and benchmarks: switch the kernels to `isa`. FailedPrecondition when this CPU
// lacks it. Not thread-safe with running kernels.
absl::Status SetIsa(Isa isa);

// One instruction set's kernel bodies (isa_kernels.inc). Each works on a slice of its
// problem, so callers split the work between threads.
struct IsaKernels {
  const char* name;
  // Rows [m0, m1) x panels [p0, p1) of a Linear with a kPanels16 weight.
  void (*gemm_block)(const LinearParams& p, int m0, int m1, int p0, int p1);
  void (*rms_norm_rows)(const RmsNormParams& p, int r0, int r1);
  void (*silu_mul_rows)(const SiluMulParams& p, int r0, int r1);
  void (*add_range)(float* x, const float* y, int64_t begin, int64_t end);
  void (*sigmoid_gated_add_rows)(const SigmoidGatedAddParams& p, int r0, int r1);
  void (*combine_rows)(const CombineParams& p, int t0, int t1);
  void (*widen_bf16_row)(const uint16_t* src, int n, float* dst);
  // Items [i0, i1) of the (token, kv head) grid; `scores` holds the group's q heads' scores
  // of one token's visible keys.
  void (*attention_items)(const PagedAttentionParams& p, int64_t i0, int64_t i1, float* scores);
  // Sum of n floats, n a multiple of 64 (the bandwidth probe of bench/bounds.h).
  float (*sum_floats)(const float* x, int64_t n);
  // out[i] = e^((x[i] - shift) * scale); returns the sum of out (one thread).
  float (*exp_row)(const float* x, int64_t n, float scale, float shift, float* out);
  // The largest of x[0, n), n >= 1 (one thread).
  float (*max_row)(const float* x, int64_t n);
};

const IsaKernels& Kernels();  // of ActiveIsa()
const IsaKernels& KernelsFor(Isa isa);

}  // namespace moe::kernels::cpu
