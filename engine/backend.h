// The op-level seam between the model and the hardware (DESIGN.md section 1a, after
// ggml-backend): the forward pass (engine/model.cc) is written once over these ops, the
// CPU backend (engine/cpu_backend.h) runs them with kernels/cpu and is the oracle, and the
// CUDA backend (engine/cuda/, built only with CUDA) runs them with kernels/cuda. Every op
// takes the Params struct of kernels/params.h, is checked with the backend's
// CanImplement before it runs, and returns that check's error instead of running.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/params.h"

namespace moe {

// Where a buffer lives.
enum class MemoryKind {
  kHost,        // ordinary host memory
  kPinnedHost,  // page-locked host memory (fast, asynchronous copies to a device)
  kDevice,      // accelerator memory
};
const char* MemoryKindName(MemoryKind kind);

// An owned allocation made by a Backend (STYLE.md item 12). Move-only; frees itself with
// the deleter the backend gave it, so it may outlive nothing but its own bytes.
class Buffer {
 public:
  using Deleter = std::function<void(void*, size_t)>;
  Buffer() = default;
  Buffer(void* data, size_t bytes, MemoryKind kind, Deleter deleter)
      : data_(data), bytes_(bytes), kind_(kind), deleter_(std::move(deleter)) {}
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
      kind_ = other.kind_;
      deleter_ = std::move(other.deleter_);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void Reset() {
    if (data_ != nullptr && deleter_) deleter_(data_, bytes_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::kHost;
  Deleter deleter_;
};

// A recorded sequence of ops (a CUDA graph): Replay issues them again, on the buffers
// and with the parameters they were recorded with (the buffers' contents may change).
class OpGraph {
 public:
  virtual ~OpGraph() = default;
  virtual absl::Status Replay() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;  // "cpu", "cuda"
  // For the startup log and metrics: the kernels' path, e.g. "avx512" or "sm_90".
  virtual std::string kernel_path() const = 0;
  virtual std::string description() const = 0;
  // The layout its Linear reads weights in; the loader packs weights into it once.
  virtual kernels::WeightLayout weight_layout() const = 0;
  // Where activations, weights and the KV cache live for its ops.
  virtual MemoryKind compute_memory() const = 0;

  // Zero bytes give an empty Buffer. Memory is not initialised. ResourceExhausted when it
  // cannot be had.
  virtual absl::StatusOr<Buffer> Allocate(MemoryKind kind, size_t bytes) = 0;
  // Blocking copies between host memory and memory of this backend.
  virtual absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  // The same, in order with the ops and without waiting: the bytes are at host_dst after
  // the next Synchronize (or blocking copy). On a device backend host_dst must be pinned
  // host memory (Allocate(kPinnedHost)).
  virtual absl::Status CopyToHostAsync(void* host_dst, const void* src, size_t bytes) = 0;
  // Sets `bytes` bytes of this backend's memory at `dst` to `value` (host memory is
  // touched, so its pages are in place before the first step needs them).
  virtual absl::Status Memset(void* dst, int value, size_t bytes) = 0;
  // Waits for every op issued so far.
  virtual absl::Status Synchronize() = 0;

  // Records the ops `issue` makes, without running them, into an OpGraph. Unimplemented
  // where the backend has no graphs (the CPU). An op that cannot be recorded (a wait for
  // the host, an allocation) fails the recording, which then returns its error.
  virtual absl::StatusOr<std::unique_ptr<OpGraph>> Capture(
      const std::function<absl::Status()>& issue) {
    (void)issue;
    return absl::UnimplementedError(absl::StrCat(name(), " backend: no op graphs"));
  }
  // Changes whenever the backend frees or moves its own scratch memory, which recorded
  // graphs may reference: a graph recorded at another generation must not be replayed.
  virtual uint64_t scratch_generation() const { return 0; }

  // --- ops (kernels/params.h) ---
  virtual absl::Status Embedding(const kernels::EmbeddingParams& p) = 0;
  virtual absl::Status Linear(const kernels::LinearParams& p) = 0;
  // Independent Linears issued together (q/k/v; the shared expert's projections).
  virtual absl::Status LinearBatch(std::span<const kernels::LinearParams> p) = 0;
  virtual absl::Status RmsNorm(const kernels::RmsNormParams& p) = 0;
  virtual absl::Status Rope(const kernels::RopeParams& p) = 0;
  virtual absl::Status KvWrite(const kernels::KvWriteParams& p) = 0;
  virtual absl::Status PagedAttention(const kernels::PagedAttentionParams& p) = 0;
  virtual absl::Status SiluMul(const kernels::SiluMulParams& p) = 0;
  virtual absl::Status Add(const kernels::AddParams& p) = 0;
  virtual absl::Status Clamp(const kernels::ClampParams& p) = 0;
  virtual absl::Status SigmoidGatedAdd(const kernels::SigmoidGatedAddParams& p) = 0;
  virtual absl::Status Gating(const kernels::GatingParams& p) = 0;
  virtual absl::Status Dispatch(const kernels::DispatchParams& p) = 0;
  virtual absl::Status ExpertFfn(const kernels::ExpertFfnParams& p) = 0;
  virtual absl::Status Combine(const kernels::CombineParams& p) = 0;
  virtual absl::Status ArgMax(const kernels::ArgMaxParams& p) = 0;
  virtual absl::Status Sample(const kernels::SampleParams& p) = 0;
  virtual absl::Status SelfContrastRows(const kernels::SelfContrastRowsParams& p) = 0;
};

// The CPU backend: kernels/cpu on the instruction set kernels/cpu/isa.h chose.
std::unique_ptr<Backend> MakeCpuBackend();

}  // namespace moe
