#include "engine/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/moe_cuda.h"

namespace moe {
namespace {

namespace cuda = kernels::cuda;

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

class CudaGraph final : public OpGraph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream) : exec_(exec), stream_(stream) {}
  ~CudaGraph() override { MOE_CUDA_CHECK_FATAL(cudaGraphExecDestroy(exec_)); }
  absl::Status Replay() override {
    MOE_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    return absl::OkStatus();
  }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, cudaStream_t stream, cuda::CublasHandle cublas,
              cuda::GroupedGemmScratch scratch, cuda::DeviceBuffer<unsigned char> cublas_workspace,
              std::string name, std::string arch)
      : device_(device),
        stream_(stream),
        cublas_(std::move(cublas)),
        scratch_(std::move(scratch)),
        cublas_workspace_(std::move(cublas_workspace)),
        device_name_(std::move(name)),
        arch_(std::move(arch)) {}
  ~CudaBackend() override {
    if (stream_ != nullptr) MOE_CUDA_CHECK_FATAL(cudaStreamDestroy(stream_));
  }

  const char* name() const override { return "cuda"; }
  std::string kernel_path() const override { return arch_; }
  std::string description() const override {
    return absl::StrCat("cuda device ", device_, " (", device_name_, ")");
  }
  kernels::WeightLayout weight_layout() const override { return kernels::WeightLayout::kRowMajor; }
  MemoryKind compute_memory() const override { return MemoryKind::kDevice; }

  absl::StatusOr<Buffer> Allocate(MemoryKind kind, size_t bytes) override {
    if (bytes == 0) return Buffer();
    void* p = nullptr;
    switch (kind) {
      case MemoryKind::kDevice:
        MOE_CUDA_CHECK(cudaMalloc(&p, bytes));
        return Buffer(p, bytes, kind, [](void* d, size_t) { MOE_CUDA_CHECK_FATAL(cudaFree(d)); });
      case MemoryKind::kPinnedHost:
        MOE_CUDA_CHECK(cudaMallocHost(&p, bytes));
        return Buffer(p, bytes, kind,
                      [](void* d, size_t) { MOE_CUDA_CHECK_FATAL(cudaFreeHost(d)); });
      case MemoryKind::kHost:
        p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (p == nullptr) return absl::ResourceExhaustedError("host allocation failed");
        return Buffer(p, bytes, kind, [](void* d, size_t) { std::free(d); });
    }
    return absl::InvalidArgumentError("unknown memory kind");
  }
  absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status CopyToHostAsync(void* host_dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    return absl::OkStatus();
  }
  absl::Status Memset(void* dst, int value, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status Synchronize() override {
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

  // A CUDA graph of the ops `issue` makes on this backend's stream (thread-local capture
  // mode: only this thread's unsafe calls, such as a synchronize, end it in error).
  absl::StatusOr<std::unique_ptr<OpGraph>> Capture(
      const std::function<absl::Status()>& issue) override {
    MOE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status issued = issue();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!issued.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      (void)cudaGetLastError();  // the capture's error is reported here, not left sticky
      return !issued.ok() ? issued
                          : absl::InternalError(
                                absl::StrCat("CUDA graph capture: ", cudaGetErrorString(ended)));
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (made != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("CUDA graph instantiate: ", cudaGetErrorString(made)));
    }
    return std::unique_ptr<OpGraph>(new CudaGraph(exec, stream_));
  }
  uint64_t scratch_generation() const override {
    return linear_scratch_.generation() + device_plan_.generation();
  }

  absl::Status Linear(const kernels::LinearParams& p) override {
    return cuda::LaunchLinear(p, cublas_.get(), stream_, &linear_scratch_);
  }
  absl::Status LinearBatch(std::span<const kernels::LinearParams> p) override {
    for (const kernels::LinearParams& one : p) MOE_RETURN_IF_ERROR(Linear(one));
    return absl::OkStatus();
  }
  absl::Status Gating(const kernels::GatingParams& p) override {
    return cuda::LaunchGating(p, stream_);
  }
  absl::Status Dispatch(const kernels::DispatchParams& p) override {
    return cuda::LaunchDispatch(p, stream_);
  }
  absl::Status ExpertFfn(const kernels::ExpertFfnParams& p) override {
    // Resident bf16 experts at decode sizes: our grouped GEMM reads the plan on the device
    // (no host synchronization, so the step can be captured). Past kDevicePlanMaxPairs
    // (prefill, where one wait per layer is small beside its GEMMs) cuBLAS's grouped GEMM,
    // tuned for large shapes. MOE_CUDA_FFN=cublas or =ours forces one path
    // (bench/moe_gpu_bench times both).
    const int64_t pairs = static_cast<int64_t>(p.num_tokens) * p.top_k;
    const bool ours = ffn_choice_ == FfnChoice::kOurs ||
                      (ffn_choice_ == FfnChoice::kAuto && pairs <= kDevicePlanMaxPairs);
    if (ours && cuda::CanImplementDevicePlan(p).ok()) {
      return cuda::LaunchExpertFfnDevicePlan(p, device_plan_, stream_);
    }
    // cuBLAS takes the GEMM shapes on the host: read the plan back once per layer.
    std::vector<int32_t> offsets(p.num_experts + 1);
    MOE_RETURN_IF_ERROR(
        CopyToHost(offsets.data(), p.expert_offsets, offsets.size() * sizeof(int32_t)));
    cuda::ExpertFfnLaunch launch;
    launch.expert_offsets_host = offsets.data();
    launch.gemm_path = p.num_experts <= scratch_.max_experts() ? cuda::FfnGemmPath::kGrouped
                                                               : cuda::FfnGemmPath::kLoop;
    launch.cublas = cublas_.get();
    launch.grouped_scratch = &scratch_;
    return cuda::LaunchExpertFfn(p, launch, stream_);
  }
  absl::Status Combine(const kernels::CombineParams& p) override {
    return cuda::LaunchCombine(p, stream_);
  }

  absl::Status Embedding(const kernels::EmbeddingParams& p) override {
    return cuda::LaunchEmbedding(p, stream_);
  }
  absl::Status RmsNorm(const kernels::RmsNormParams& p) override {
    return cuda::LaunchRmsNorm(p, stream_);
  }
  absl::Status Rope(const kernels::RopeParams& p) override { return cuda::LaunchRope(p, stream_); }
  absl::Status KvWrite(const kernels::KvWriteParams& p) override {
    return cuda::LaunchKvWrite(p, stream_);
  }
  absl::Status PagedAttention(const kernels::PagedAttentionParams& p) override {
    return cuda::LaunchPagedAttention(p, stream_);
  }
  absl::Status SiluMul(const kernels::SiluMulParams& p) override {
    return cuda::LaunchSiluMul(p, stream_);
  }
  absl::Status Add(const kernels::AddParams& p) override { return cuda::LaunchAdd(p, stream_); }
  absl::Status Clamp(const kernels::ClampParams& p) override {
    return cuda::LaunchClamp(p, stream_);
  }
  absl::Status ArgMax(const kernels::ArgMaxParams& p) override {
    return cuda::LaunchArgMax(p, stream_);
  }
  absl::Status Sample(const kernels::SampleParams& p) override {
    return cuda::LaunchSample(p, stream_);
  }
  absl::Status SelfContrastRows(const kernels::SelfContrastRowsParams& p) override {
    return cuda::LaunchSelfContrastRows(p, stream_);
  }
  absl::Status SigmoidGatedAdd(const kernels::SigmoidGatedAddParams& p) override {
    return cuda::LaunchSigmoidGatedAdd(p, stream_);
  }

 private:
  int device_;
  cudaStream_t stream_;
  cuda::CublasHandle cublas_;
  cuda::GroupedGemmScratch scratch_;
  cuda::DeviceBuffer<unsigned char> cublas_workspace_;
  cuda::DeviceScratch linear_scratch_;  // a bf16 Linear's rounded input rows
  cuda::DevicePlanScratch device_plan_;
  enum class FfnChoice { kAuto, kOurs, kCublas };
  // Not measured yet (no device has run this): the crossover is a first guess.
  static constexpr int64_t kDevicePlanMaxPairs = 2048;
  const FfnChoice ffn_choice_ = [] {
    const char* v = std::getenv("MOE_CUDA_FFN");
    const std::string choice = v == nullptr ? "" : v;
    return choice == "cublas" ? FfnChoice::kCublas
           : choice == "ours" ? FfnChoice::kOurs
                              : FfnChoice::kAuto;
  }();
  std::string device_name_;
  std::string arch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device || device < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", device, " (", count, " found)"));
  }
  MOE_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop;
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  absl::StatusOr<cuda::CublasHandle> cublas = cuda::CublasHandle::Create();
  absl::StatusOr<cuda::GroupedGemmScratch> scratch =
      cuda::GroupedGemmScratch::Create(kernels::kMaxExperts);
  // cuBLAS's workspace, given up front so it never allocates one inside a graph capture.
  absl::StatusOr<cuda::DeviceBuffer<unsigned char>> workspace =
      cuda::DeviceBuffer<unsigned char>::Create(kCublasWorkspaceBytes);
  if (!cublas.ok() || !scratch.ok() || !workspace.ok()) {
    MOE_CUDA_CHECK_FATAL(cudaStreamDestroy(stream));
    return !cublas.ok() ? cublas.status() : !scratch.ok() ? scratch.status() : workspace.status();
  }
  if (cublasSetWorkspace(cublas->get(), workspace->data(), workspace->bytes()) !=
      CUBLAS_STATUS_SUCCESS) {
    MOE_CUDA_CHECK_FATAL(cudaStreamDestroy(stream));
    return absl::InternalError("cublasSetWorkspace failed");
  }
  return std::unique_ptr<Backend>(new CudaBackend(
      device, stream, *std::move(cublas), *std::move(scratch), *std::move(workspace), prop.name,
      absl::StrCat("sm_", prop.major, prop.minor)));
}

}  // namespace moe

// The entry point Model::Load looks up after opening this library (engine/model.cc).
extern "C" __attribute__((visibility("default"))) void moe_create_cuda_backend(
    int device, absl::StatusOr<std::unique_ptr<moe::Backend>>* out) {
  *out = moe::MakeCudaBackend(device);
}
