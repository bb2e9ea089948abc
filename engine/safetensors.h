// Read-only, memory-mapped safetensors files (https://github.com/huggingface/safetensors).
// Format: u64 little-endian header length N, N bytes of JSON header, then the data
// buffer. Every tensor's [begin, end) offsets are relative to the data buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

// Every dtype name the safetensors format defines. Only kF32, kF16 and kBF16 can be
// converted to fp32 by the engine; the others parse but are refused on read.
enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

// Bytes per element; 1 for the 8-bit types.
size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);

class MappedFile;

// A tensor inside a mapped file. `data` stays valid while the owning file is open.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string file;                    // path of the file it lives in, for error messages
  const MappedFile* mapped = nullptr;  // the file it lives in

  int64_t numel() const;
};

// RAII read-only mmap of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Copies the n bytes of the file at `at` (a pointer into data()) to `dst` with pread:
  // large sequential reads at the disk's speed, and pages this process never maps (so
  // they are not in its resident set). DataLoss naming the file if it is short.
  absl::Status Read(const std::byte* at, size_t n, void* dst) const;

 private:
  MappedFile(std::string path, int fd, const std::byte* data, size_t size)
      : path_(std::move(path)), fd_(fd), data_(data), size_(size) {}
  std::string path_;
  int fd_ = -1;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// A tensor's bytes copied to `dst` (view.nbytes of them) through its file's Read.
absl::Status ReadTensorBytes(const TensorView& view, void* dst);

// One parsed and validated safetensors file. Open() rejects, naming the file (and the
// tensor where there is one): a file shorter than its header, a header that is not a
// JSON object, unknown dtypes, shapes whose byte size disagrees with the offsets, offsets
// out of range, overlapping tensors, and gaps in the data buffer's coverage.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // nullptr when absent.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }
  // The "__metadata__" string map, empty when absent.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: its bytes come from `fill(dst, offset, n)`, asked for in chunks
// (offset and n in bytes of the tensor's data), so a file larger than memory can be made.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::function<void(std::byte* dst, size_t offset, size_t n)> fill;
};

// Writes a safetensors file (header, then each tensor's data in order). Errors name the
// file.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

// Converts `n` elements of `dtype` at `src` to fp32 (exact for f16 and bf16).
// InvalidArgument for dtypes other than f32/f16/bf16.
absl::Status ConvertToF32(DType dtype, const std::byte* src, int64_t n, float* dst);

}  // namespace moe
