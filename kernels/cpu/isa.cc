#include "kernels/cpu/isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace moe::kernels::cpu {

const IsaKernels& Avx512Kernels();
const IsaKernels& Avx2Kernels();
const IsaKernels& GenericKernels();

namespace {

uint64_t Xgetbv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    const bool osxsave = (c & bit_OSXSAVE) != 0;
    const bool fma = (c & bit_FMA) != 0;
    const uint64_t xcr0 = osxsave ? Xgetbv0() : 0;
    const bool ymm_state = (xcr0 & 0x6) == 0x6;                    // SSE and AVX state
    const bool zmm_state = (xcr0 & 0xe6) == 0xe6;                  // + opmask, ZMM_Hi256, Hi16_ZMM
    const bool amx_state = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
    unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0;
    if (__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7)) {
      f.avx2_fma = ymm_state && fma && (b7 & bit_AVX2) != 0;
      f.avx512 = zmm_state && (b7 & bit_AVX512F) && (b7 & bit_AVX512BW) && (b7 & bit_AVX512VL) &&
                 (b7 & bit_AVX512DQ) && fma;
      f.amx_bf16 = amx_state && (d7 & (1u << 22)) != 0;
      unsigned a71 = 0, b71 = 0, c71 = 0, d71 = 0;
      if (a7 >= 1 && __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71)) {
        f.avx512_bf16 = f.avx512 && (a71 & (1u << 5)) != 0;
      }
    }
  }
  f.model = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) f.model = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  return f;
}

bool Supported(Isa isa) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case Isa::kAvx512:
      return f.avx512;
    case Isa::kAvx2:
      return f.avx2_fma;
    case Isa::kGeneric:
      return true;
  }
  return false;
}

Isa InitialIsa() {
  if (const char* env = std::getenv("MOE_CPU_ISA"); env != nullptr) {
    for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
      if (std::strcmp(env, IsaName(isa)) == 0 && Supported(isa)) return isa;
    }
  }
  return BestIsa();
}

std::atomic<Isa>& Active() {
  static std::atomic<Isa> active{InitialIsa()};
  return active;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      return "generic";
  }
  return "?";
}

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

Isa BestIsa() {
  if (Supported(Isa::kAvx512)) return Isa::kAvx512;
  if (Supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kGeneric;
}

Isa ActiveIsa() { return Active().load(std::memory_order_relaxed); }

absl::Status SetIsa(Isa isa) {
  if (!Supported(isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("this CPU (", GetCpuFeatures().model, ") does not support ", IsaName(isa)));
  }
  Active().store(isa, std::memory_order_relaxed);
  return absl::OkStatus();
}

const IsaKernels& KernelsFor(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return Avx512Kernels();
    case Isa::kAvx2:
      return Avx2Kernels();
    case Isa::kGeneric:
      break;
  }
  return GenericKernels();
}

const IsaKernels& Kernels() { return KernelsFor(ActiveIsa()); }

}  // namespace moe::kernels::cpu
