#include "engine/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace moe {

namespace cpu = kernels::cpu;

const char* MemoryKindName(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kHost:
      return "host";
    case MemoryKind::kPinnedHost:
      return "pinned_host";
    case MemoryKind::kDevice:
      return "device";
  }
  return "?";
}

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

CpuBackend::CpuBackend() = default;

std::string CpuBackend::kernel_path() const { return cpu::IsaName(cpu::ActiveIsa()); }

std::string CpuBackend::description() const {
  const cpu::CpuFeatures& f = cpu::GetCpuFeatures();
  return absl::StrCat("cpu kernels ", kernel_path(), " on ", f.model, " (avx512_bf16 ",
                      f.avx512_bf16 ? "yes" : "no", ", amx ", f.amx_bf16 ? "yes" : "no", "), ",
                      cpu::NumThreads(), " threads");
}

absl::StatusOr<Buffer> CpuBackend::Allocate(MemoryKind kind, size_t bytes) {
  if (kind == MemoryKind::kDevice) {
    return absl::InvalidArgumentError("the cpu backend has no device memory");
  }
  if (bytes == 0) return Buffer();
  // Large buffers come straight from the kernel: page-aligned, untouched pages cost no
  // memory, and freeing returns them. No MADV_HUGEPAGE: with this machine's THP defrag
  // policy ("madvise") the first touch then compacts memory synchronously, which made the
  // load of moe-1b take 4.6 s instead of 1.2 s, with no decode speed to show for it.
  constexpr size_t kMmapBytes = size_t{1} << 20;
  if (bytes >= kMmapBytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    }
    return Buffer(p, bytes, kind, [](void* d, size_t n) { ::munmap(d, n); });
  }
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  return Buffer(p, bytes, kind, [](void* d, size_t) { std::free(d); });
}

absl::Status CpuBackend::CopyToBackend(void* dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Memset(void* dst, int value, size_t bytes) {
  // Each thread faults in and fills its own share.
  constexpr int64_t kChunk = int64_t{1} << 21;
  const int64_t chunks = (static_cast<int64_t>(bytes) + kChunk - 1) / kChunk;
  cpu::ParallelFor(chunks, 1, [&](int64_t c0, int64_t c1) {
    const size_t begin = static_cast<size_t>(c0 * kChunk);
    const size_t end = std::min(bytes, static_cast<size_t>(c1 * kChunk));
    std::memset(static_cast<char*>(dst) + begin, value, end - begin);
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, src, bytes);
  return absl::OkStatus();
}

namespace {

// MOE_PROFILE_OPS=1: the time each op took, summed over the process and printed to stderr
// at exit (for developers; costs two clock reads per op).
struct OpProfile {
  static OpProfile& Get() {
    static OpProfile p;
    return p;
  }
  const bool enabled = [] {
    const char* e = std::getenv("MOE_PROFILE_OPS");
    return e != nullptr && *e == '1';
  }();
  std::map<std::string, std::pair<double, int64_t>> ops;  // name -> (seconds, calls)
  ~OpProfile() {
    if (!enabled) return;
    double total = 0;
    for (const auto& [name, t] : ops) total += t.first;
    for (const auto& [name, t] : ops) {
      std::fprintf(stderr, "op %-16s %10.3f ms %5.1f%% %9lld calls\n", name.c_str(), t.first * 1e3,
                   100 * t.first / total, static_cast<long long>(t.second));
    }
  }
};

class OpTimer {
 public:
  explicit OpTimer(const char* name) : name_(OpProfile::Get().enabled ? name : nullptr) {
    if (name_) start_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (!name_) return;
    auto& slot = OpProfile::Get().ops[name_];
    slot.first += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ++slot.second;
  }

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

// Each op: the kernel's own CanImplement, then the kernel.
#define MOE_CPU_OP(Op, Params)                   \
  absl::Status CpuBackend::Op(const Params& p) { \
    OpTimer timer(#Op);                          \
    MOE_RETURN_IF_ERROR(cpu::CanImplement(p));   \
    cpu::Op(p);                                  \
    return absl::OkStatus();                     \
  }
MOE_CPU_OP(Embedding, kernels::EmbeddingParams)
MOE_CPU_OP(Linear, kernels::LinearParams)
MOE_CPU_OP(RmsNorm, kernels::RmsNormParams)
MOE_CPU_OP(Rope, kernels::RopeParams)
MOE_CPU_OP(KvWrite, kernels::KvWriteParams)
MOE_CPU_OP(PagedAttention, kernels::PagedAttentionParams)
MOE_CPU_OP(SiluMul, kernels::SiluMulParams)
MOE_CPU_OP(SigmoidGatedAdd, kernels::SigmoidGatedAddParams)
MOE_CPU_OP(Gating, kernels::GatingParams)
MOE_CPU_OP(Dispatch, kernels::DispatchParams)
MOE_CPU_OP(ExpertFfn, kernels::ExpertFfnParams)
MOE_CPU_OP(Combine, kernels::CombineParams)
MOE_CPU_OP(ArgMax, kernels::ArgMaxParams)
MOE_CPU_OP(Sample, kernels::SampleParams)
MOE_CPU_OP(SelfContrastRows, kernels::SelfContrastRowsParams)
#undef MOE_CPU_OP

absl::Status CpuBackend::LinearBatch(std::span<const kernels::LinearParams> p) {
  OpTimer timer("LinearBatch");
  for (const kernels::LinearParams& one : p) MOE_RETURN_IF_ERROR(cpu::CanImplement(one));
  cpu::LinearBatch(p);
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const kernels::AddParams& p) {
  OpTimer timer("Add");
  if (p.n > 0 && (p.x == nullptr || p.y == nullptr)) {
    return absl::InvalidArgumentError("add: null buffer");
  }
  cpu::Add(p);
  return absl::OkStatus();
}

absl::Status CpuBackend::Clamp(const kernels::ClampParams& p) {
  if (p.n > 0 && p.x == nullptr) return absl::InvalidArgumentError("clamp: null buffer");
  if (!(p.limit > 0.f)) return absl::InvalidArgumentError("clamp: limit must be positive");
  cpu::Clamp(p);
  return absl::OkStatus();
}

}  // namespace moe
