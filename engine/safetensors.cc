#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/absl_compat.h"
#include "base/status_macros.h"
#include "kernels/cpu/gemm.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

// safetensors stores every value little-endian; the engine reads them in place.
static_assert(std::endian::native == std::endian::little, "safetensors needs a little-endian host");

// Same limit as the reference implementation's MAX_HEADER_SIZE.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2},        {DType::kBF16, "BF16", 2},
    {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},        {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},          {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // unreachable: kDTypes lists every enumerator
}

std::optional<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Error helpers: every message starts with the file, then the tensor when there is one.
std::string FilePrefix(const std::string& path) {
  return absl::StrCat("safetensors file '", path, "': ");
}
std::string TensorPrefix(const std::string& path, std::string_view tensor) {
  return absl::StrCat(FilePrefix(path), "tensor '", ToAbsl(tensor), "': ");
}

// Reads a JSON integer into int64 (accepts signed and unsigned JSON integers, not floats).
std::optional<int64_t> JsonInt64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

// Parses and checks one header entry, except its placement relative to other tensors.
absl::StatusOr<TensorView> ParseTensor(const std::string& path, const std::string& name,
                                       const nlohmann::json& entry, const std::byte* buffer,
                                       uint64_t buffer_size, uint64_t* begin_out,
                                       uint64_t* end_out) {
  const std::string prefix = TensorPrefix(path, name);
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "header entry must be a JSON object, got ", entry.type_name()));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "missing \"", key, "\""));
    }
  }

  TensorView view;
  view.name = name;
  view.file = path;

  const nlohmann::json& dtype = entry.at("dtype");
  if (!dtype.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "\"dtype\" must be a string, got ", dtype.type_name()));
  }
  const std::string& dtype_name = dtype.get_ref<const std::string&>();
  std::optional<DType> parsed = ParseDType(dtype_name);
  if (!parsed) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "unknown dtype \"", dtype_name, "\""));
  }
  view.dtype = *parsed;

  const nlohmann::json& shape = entry.at("shape");
  if (!shape.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "\"shape\" must be an array, got ", shape.type_name()));
  }
  uint64_t numel = 1;
  for (const nlohmann::json& dim_json : shape) {
    std::optional<int64_t> dim = JsonInt64(dim_json);
    if (!dim) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "\"shape\" must hold integers, got ",
                                                     dim_json.dump(), " in ", shape.dump()));
    }
    if (*dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "negative dimension ", *dim, " in shape ", shape.dump()));
    }
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(*dim), &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "element count of shape ", shape.dump(), " overflows"));
    }
    view.shape.push_back(*dim);
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(view.dtype)), &nbytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "byte size of shape ", shape.dump(), " overflows"));
  }

  const nlohmann::json& offsets = entry.at("data_offsets");
  std::optional<int64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = JsonInt64(offsets[0]);
    end = JsonInt64(offsets[1]);
  }
  if (!begin || !end || *begin < 0 || *end < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "\"data_offsets\" must be [begin, end] with non-negative integers, got ",
        offsets.dump()));
  }
  if (*begin > *end) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "data_offsets [", *begin, ", ", *end, "] have begin after end"));
  }
  const uint64_t ubegin = static_cast<uint64_t>(*begin);
  const uint64_t uend = static_cast<uint64_t>(*end);
  if (uend - ubegin != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "shape ", ShapeString(view.shape), " of ", ToAbsl(DTypeName(view.dtype)), " needs ",
        nbytes, " bytes but data_offsets [", ubegin, ", ", uend, "] span ", uend - ubegin));
  }
  if (uend > buffer_size) {
    return absl::DataLossError(absl::StrCat(prefix, "data_offsets [", ubegin, ", ", uend,
                                            "] run past the end of the data buffer (", buffer_size,
                                            " bytes); is the file truncated?"));
  }
  view.data = buffer + ubegin;
  view.nbytes = static_cast<size_t>(nbytes);
  *begin_out = ubegin;
  *end_out = uend;
  return view;
}

absl::Status ParseMetadata(const std::string& path, const nlohmann::json& metadata,
                           std::map<std::string, std::string>* out) {
  if (metadata.is_null()) return absl::OkStatus();  // the reference library accepts null
  if (!metadata.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        FilePrefix(path), "\"__metadata__\" must be an object, got ", metadata.type_name()));
  }
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(FilePrefix(path), "\"__metadata__\" value for \"", key,
                       "\" must be a string, got ", value.type_name()));
    }
    out->emplace(key, value.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }

std::string_view DTypeName(DType dtype) { return Info(dtype).name; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::ErrnoToStatus(err, absl::StrCat("cannot open '", path, "'"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("cannot stat '", path, "'"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const std::byte* data = nullptr;
  // mmap refuses length 0; an empty file maps to (nullptr, 0) and its readers reject it.
  if (size > 0) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("cannot mmap '", path, "'"));
    }
    data = static_cast<const std::byte*>(addr);
  }
  // The descriptor stays open for Read().
  return std::unique_ptr<MappedFile>(new MappedFile(path, fd, data, size));
}

absl::Status MappedFile::Read(const std::byte* at, size_t n, void* dst) const {
  if (at < data_ || at + n > data_ + size_) {
    return absl::OutOfRangeError(absl::StrCat("read outside '", path_, "'"));
  }
  size_t offset = static_cast<size_t>(at - data_);
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, out, std::min<size_t>(n, size_t{1} << 30), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path_, "'"));
    if (got == 0) return absl::DataLossError(absl::StrCat("'", path_, "' ended early"));
    out += got;
    offset += static_cast<size_t>(got);
    n -= static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

absl::Status ReadTensorBytes(const TensorView& view, void* dst) {
  if (view.mapped == nullptr) {
    std::memcpy(dst, view.data, view.nbytes);
    return absl::OkStatus();
  }
  return view.mapped->Read(view.data, view.nbytes, dst);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    size_t bytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) bytes *= static_cast<size_t>(d);
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create '", path, "'"));
  auto write_all = [&](const void* data, size_t n) -> absl::Status {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "'"));
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  };
  const uint64_t header_len = text.size();
  absl::Status status = write_all(&header_len, sizeof(header_len));
  if (status.ok()) status = write_all(text.data(), text.size());
  constexpr size_t kChunk = size_t{4} << 20;
  std::vector<std::byte> chunk(kChunk);
  for (size_t i = 0; i < tensors.size() && status.ok(); ++i) {
    size_t bytes = DTypeSize(tensors[i].dtype);
    for (int64_t d : tensors[i].shape) bytes *= static_cast<size_t>(d);
    for (size_t at = 0; at < bytes && status.ok(); at += kChunk) {
      const size_t n = std::min(kChunk, bytes - at);
      tensors[i].fill(chunk.data(), at, n);
      status = write_all(chunk.data(), n);
    }
  }
  if (::close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot close '", path, "'"));
  }
  return status;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  const size_t file_size = mapped->size();
  if (file_size < 8) {
    return absl::DataLossError(absl::StrCat(FilePrefix(path), "file is ", file_size,
                                            " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, mapped->data(), sizeof(header_len));
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(FilePrefix(path), "header length ", header_len,
                                                   " exceeds the limit of ", kMaxHeaderBytes,
                                                   " bytes"));
  }
  if (header_len > file_size - 8) {
    return absl::DataLossError(absl::StrCat(FilePrefix(path), "header length ", header_len,
                                            " runs past the end of the ", file_size,
                                            "-byte file; is the file truncated?"));
  }

  const char* header_begin = reinterpret_cast<const char*>(mapped->data() + 8);
  const char* header_end = header_begin + header_len;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_end);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann reports parse errors only by exception, and a number too large for a
    // double as out_of_range (406), not parse_error: catch both here.
    return absl::InvalidArgumentError(
        absl::StrCat(FilePrefix(path), "header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(FilePrefix(path), "header must be a JSON object, got ", header.type_name()));
  }

  const std::byte* buffer = mapped->data() + 8 + header_len;
  const uint64_t buffer_size = file_size - 8 - header_len;
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile(std::move(mapped)));

  struct Extent {
    uint64_t begin;
    uint64_t end;
    const std::string* name;
  };
  std::vector<Extent> extents;
  extents.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      MOE_RETURN_IF_ERROR(ParseMetadata(path, value, &file->metadata_));
      continue;
    }
    uint64_t begin = 0, end = 0;
    MOE_ASSIGN_OR_RETURN(TensorView view,
                         ParseTensor(path, key, value, buffer, buffer_size, &begin, &end));
    view.mapped = file->file_.get();
    auto [it, inserted] = file->tensors_.emplace(key, std::move(view));
    (void)inserted;  // JSON object keys are unique after parsing
    extents.push_back({begin, end, &it->first});
  }

  // Like the reference implementation: sorted by offsets, the tensors must tile the data
  // buffer exactly, with neither overlaps nor gaps.
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const Extent* previous = nullptr;
  for (const Extent& e : extents) {
    if (e.begin < covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          FilePrefix(path), "tensors '", *previous->name, "' [", previous->begin, ", ",
          previous->end, ") and '", *e.name, "' [", e.begin, ", ", e.end, ") overlap"));
    }
    if (e.begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(FilePrefix(path), "data buffer bytes [", covered, ", ", e.begin,
                       ") belong to no tensor (gap before tensor '", *e.name, "')"));
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != buffer_size) {
    return absl::InvalidArgumentError(absl::StrCat(FilePrefix(path), "data buffer bytes [", covered,
                                                   ", ", buffer_size,
                                                   ") at its end belong to no tensor"));
  }
  return file;
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status ConvertToF32(DType dtype, const std::byte* src, int64_t n, float* dst) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("negative element count ", n));
  if (n == 0) return absl::OkStatus();
  switch (dtype) {
    case DType::kF32:
      kernels::cpu::ToFloat(src, kernels::cpu::SourceType::kF32, n, dst);
      return absl::OkStatus();
    case DType::kBF16:
      kernels::cpu::ToFloat(src, kernels::cpu::SourceType::kBF16, n, dst);
      return absl::OkStatus();
    case DType::kF16:
      kernels::cpu::ToFloat(src, kernels::cpu::SourceType::kF16, n, dst);
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot convert dtype ", ToAbsl(DTypeName(dtype)), " to F32"));
  }
}

}  // namespace moe
