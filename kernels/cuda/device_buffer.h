// RAII owners of device memory and of a cuBLAS handle (STYLE.md item 12).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"

namespace moe::kernels::cuda {

// An owned, uninitialised device array of `size` elements of a trivially copyable T.
// Move-only; freed with cudaFree (synchronous with respect to the device).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { Reset(); }

  // size 0 gives an empty buffer (data() == nullptr) without touching the device.
  static absl::StatusOr<DeviceBuffer> Create(size_t size) {
    DeviceBuffer buffer;
    if (size > 0) {
      void* ptr = nullptr;
      MOE_CUDA_CHECK(cudaMalloc(&ptr, size * sizeof(T)));
      buffer.data_ = static_cast<T*>(ptr);
      buffer.size_ = size;
    }
    return buffer;
  }

  T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

  // Blocking copies for setup and tests; they check the sizes.
  absl::Status CopyFromHost(std::span<const T> src) {
    if (src.size() > size_) return absl::InvalidArgumentError("CopyFromHost: source too large");
    if (!src.empty()) {
      MOE_CUDA_CHECK(cudaMemcpy(data_, src.data(), src.size_bytes(), cudaMemcpyHostToDevice));
    }
    return absl::OkStatus();
  }
  absl::Status CopyToHost(std::span<T> dst) const {
    if (dst.size() > size_) return absl::InvalidArgumentError("CopyToHost: destination too large");
    if (!dst.empty()) {
      MOE_CUDA_CHECK(cudaMemcpy(dst.data(), data_, dst.size_bytes(), cudaMemcpyDeviceToHost));
    }
    return absl::OkStatus();
  }
  // Every byte set to `byte` (tests poison outputs with it).
  absl::Status Fill(unsigned char byte) {
    if (size_ > 0) MOE_CUDA_CHECK(cudaMemset(data_, byte, bytes()));
    return absl::OkStatus();
  }

 private:
  void Reset() {
    if (data_ != nullptr) MOE_CUDA_CHECK_FATAL(cudaFree(data_));
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

// An owned cuBLAS handle. fp32 GEMMs stay fp32: the math mode is pinned to
// CUBLAS_DEFAULT_MATH (no TF32), the precision the CPU reference is compared at.
class CublasHandle {
 public:
  CublasHandle() = default;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  CublasHandle(CublasHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  CublasHandle& operator=(CublasHandle&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~CublasHandle() { Reset(); }

  static absl::StatusOr<CublasHandle> Create() {
    CublasHandle h;
    MOE_CUBLAS_CHECK(cublasCreate(&h.handle_));
    MOE_CUBLAS_CHECK(cublasSetMathMode(h.handle_, CUBLAS_DEFAULT_MATH));
    return h;
  }

  cublasHandle_t get() const { return handle_; }

 private:
  void Reset() {
    if (handle_ != nullptr) MOE_CUBLAS_CHECK_FATAL(cublasDestroy(handle_));
    handle_ = nullptr;
  }

  cublasHandle_t handle_ = nullptr;
};

}  // namespace moe::kernels::cuda
