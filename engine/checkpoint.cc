#include "engine/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/absl_compat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / name).string();
}

bool IsFile(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

template <typename Shape>
std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Parses the index and returns weight_map as (tensor name -> shard file name).
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(const std::string& index_path) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(index_path));
  const char* begin = reinterpret_cast<const char*>(mapped->data());
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(begin, begin + mapped->size());
  } catch (const nlohmann::json::exception& e) {
    // nlohmann reports parse errors only by exception, and a number too large for a
    // double as out_of_range (406), not parse_error: catch both here.
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint index '", index_path, "' is not valid JSON: ", e.what()));
  }
  if (!index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint index '", index_path, "' must be a JSON object, got ", index.type_name()));
  }
  auto it = index.find("weight_map");
  if (it == index.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint index '", index_path, "' has no \"weight_map\""));
  }
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint index '", index_path,
                                                   "': \"weight_map\" must be an object, got ",
                                                   it->type_name()));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string() || shard.get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint index '", index_path, "': \"weight_map\" entry for tensor '",
                       tensor, "' must be a non-empty file name, got ", shard.dump()));
    }
    weight_map.emplace(tensor, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;

  const std::string index_path = JoinPath(dir, kIndexName);
  const std::string single_path = JoinPath(dir, kSingleName);
  std::map<std::string, std::string> weight_map;  // empty without an index
  if (IsFile(index_path)) {
    MOE_ASSIGN_OR_RETURN(weight_map, ReadWeightMap(index_path));
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : weight_map) shards.insert(shard);
    for (const std::string& shard : shards) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
          SafetensorsFile::Open(JoinPath(dir, shard));
      if (!file.ok()) {
        return absl::Status(
            file.status().code(),
            absl::StrCat(file.status().message(), " (shard named by '", index_path, "')"));
      }
      checkpoint->files_.push_back(*std::move(file));
    }
  } else if (IsFile(single_path)) {
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single_path));
    checkpoint->files_.push_back(std::move(file));
  } else {
    std::error_code ec;
    const bool dir_exists = std::filesystem::is_directory(dir, ec);
    return absl::NotFoundError(absl::StrCat("no weights in checkpoint directory '", dir, "'",
                                            dir_exists ? "" : " (directory does not exist)",
                                            ": looked for ", kIndexName, " and ", kSingleName));
  }

  for (const auto& file : checkpoint->files_) {
    for (const auto& [name, view] : file->tensors()) {
      auto [it, inserted] = checkpoint->index_.emplace(name, &view);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", name, "' is in both '", it->second->file, "' and '", view.file, "'"));
      }
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    auto it = checkpoint->index_.find(tensor);
    const std::string shard_path = JoinPath(dir, shard);
    if (it == checkpoint->index_.end() || it->second->file != shard_path) {
      return absl::NotFoundError(absl::StrCat("tensor '", tensor, "' listed in '", index_path,
                                              "' is absent from its shard '", shard_path, "'"));
    }
  }
  return checkpoint;
}

bool Checkpoint::Has(std::string_view name) const { return index_.contains(name); }

absl::StatusOr<const TensorView*> Checkpoint::Get(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", ToAbsl(name), "' not found in checkpoint '", dir_, "'"));
  }
  return it->second;
}

namespace {

// Checks `view` against the shape and dtype a caller wants to read it as fp32 with.
absl::Status CheckReadable(const TensorView& view, std::span<const int64_t> expected_shape) {
  if (!std::equal(view.shape.begin(), view.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", view.name, "' in '", view.file,
                                                   "' has shape ", ShapeString(view.shape),
                                                   ", expected ", ShapeString(expected_shape)));
  }
  if (view.dtype != DType::kF32 && view.dtype != DType::kF16 && view.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", view.name, "' in '", view.file,
                                                   "' has dtype ", ToAbsl(DTypeName(view.dtype)),
                                                   ", which cannot be read as F32"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<const TensorView*> Checkpoint::GetChecked(
    std::string_view name, std::span<const int64_t> expected_shape) const {
  MOE_ASSIGN_OR_RETURN(const TensorView* view, Get(name));
  MOE_RETURN_IF_ERROR(CheckReadable(*view, expected_shape));
  return view;
}

absl::Status Checkpoint::ReadF32(std::string_view name, std::span<const int64_t> expected_shape,
                                 float* out) const {
  MOE_ASSIGN_OR_RETURN(const TensorView* view, GetChecked(name, expected_shape));
  return ConvertToF32(view->dtype, view->data, view->numel(), out);
}

absl::StatusOr<std::vector<float>> Checkpoint::ReadF32(
    std::string_view name, std::initializer_list<int64_t> expected_shape) const {
  const std::span<const int64_t> shape(expected_shape.begin(), expected_shape.size());
  MOE_ASSIGN_OR_RETURN(const TensorView* view, GetChecked(name, shape));
  std::vector<float> out(static_cast<size_t>(view->numel()));
  MOE_RETURN_IF_ERROR(ConvertToF32(view->dtype, view->data, view->numel(), out.data()));
  return out;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, view] : index_) names.push_back(name);
  return names;
}

}  // namespace moe
