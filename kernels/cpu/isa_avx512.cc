// The kernel bodies for AVX-512 (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mfma; run only where cpuid reports them).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/cpu/isa.h"

namespace moe::kernels::cpu::isa_avx512 {

constexpr char kIsaName[] = "avx512";
constexpr int kMr = 6;  // rows of the GEMM register tile
constexpr int kNp = 4;  // panels (of 16 columns) of the GEMM register tile
// The vector type first, then the kernel bodies written over it.
#include "kernels/cpu/simd_avx512.inc"

#include "kernels/cpu/isa_kernels.inc"

}  // namespace moe::kernels::cpu::isa_avx512

namespace moe::kernels::cpu {
const IsaKernels& Avx512Kernels() { return isa_avx512::kTable; }
}  // namespace moe::kernels::cpu
