// The kernel bodies in portable C++ (the compiler's x86-64 baseline), for any CPU.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/cpu/isa.h"

namespace moe::kernels::cpu::isa_generic {

constexpr char kIsaName[] = "generic";
constexpr int kMr = 2;
constexpr int kNp = 1;
// The vector type first, then the kernel bodies written over it.
#include "kernels/cpu/simd_generic.inc"

#include "kernels/cpu/isa_kernels.inc"

}  // namespace moe::kernels::cpu::isa_generic

namespace moe::kernels::cpu {
const IsaKernels& GenericKernels() { return isa_generic::kTable; }
}  // namespace moe::kernels::cpu
