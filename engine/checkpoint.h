// A Hugging Face checkpoint directory's tensors: model.safetensors, or the shards named
// by model.safetensors.index.json ("weight_map": tensor name -> shard file).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/safetensors.h"

namespace moe {

class Checkpoint {
 public:
  // Opens every shard (mmap) and validates it. Errors name the directory or file: no
  // weights file at all, a missing or truncated shard, an index that is not valid JSON
  // or names a tensor its shard does not hold, a tensor present in two shards.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  ~Checkpoint();

  bool Has(std::string_view name) const;
  // NotFound naming the tensor and the directory when absent.
  absl::StatusOr<const TensorView*> Get(std::string_view name) const;

  // The tensor, after checking its shape and that its dtype is f32, f16 or bf16. Errors
  // name the tensor and its file: missing, wrong shape (both shapes printed), other dtype.
  absl::StatusOr<const TensorView*> GetChecked(std::string_view name,
                                               std::span<const int64_t> expected_shape) const;

  // Reads `name` as fp32 into `out` (numel(expected_shape) floats) after checking the
  // shape. Errors name the tensor and its file: missing, wrong shape (both shapes
  // printed), dtype that cannot convert.
  absl::Status ReadF32(std::string_view name, std::span<const int64_t> expected_shape,
                       float* out) const;
  absl::StatusOr<std::vector<float>> ReadF32(std::string_view name,
                                             std::initializer_list<int64_t> expected_shape) const;

  std::vector<std::string> TensorNames() const;
  const std::string& dir() const { return dir_; }

 private:
  Checkpoint() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // name -> tensor inside one of files_
  std::map<std::string, const TensorView*, std::less<>> index_;
};

}  // namespace moe
