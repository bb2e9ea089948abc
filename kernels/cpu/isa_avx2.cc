// The kernel bodies for AVX2 + FMA (compiled with -mavx2 -mfma; run only where cpuid
// reports them).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/cpu/isa.h"

namespace moe::kernels::cpu::isa_avx2 {

constexpr char kIsaName[] = "avx2";
constexpr int kMr = 2;  // 16 ymm registers: 2 x 2 tiles of two-ymm vectors
constexpr int kNp = 2;
// The vector type first, then the kernel bodies written over it.
#include "kernels/cpu/simd_avx2.inc"

#include "kernels/cpu/isa_kernels.inc"

}  // namespace moe::kernels::cpu::isa_avx2

namespace moe::kernels::cpu {
const IsaKernels& Avx2Kernels() { return isa_avx2::kTable; }
}  // namespace moe::kernels::cpu
