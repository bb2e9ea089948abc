// Checkpoint: single-file and sharded (index.json) directories, written byte by byte.
#include "engine/checkpoint.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/safetensors_bytes.h"

namespace moe {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using testing_bytes::F32Bytes;
using testing_bytes::Le64;
using testing_bytes::U16Bytes;

// A two-tensor shard: `<prefix>a` f32 [2, 3] holding 0..5 and `<prefix>b` bf16 [2].
std::string ShardHeader(const std::string& prefix) {
  return R"({")" + prefix + R"(a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},")" + prefix +
         R"(b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]}})";
}
std::string ShardData() {
  return F32Bytes({0, 1, 2, 3, 4, 5}) + U16Bytes({0x3F80, 0xC040});  // bf16 1.0, -3.0
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ckpt_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    std::ofstream out(Path(name), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good());
    return Path(name);
  }

  std::string WriteSafetensors(const std::string& name, const std::string& header,
                               const std::string& data) {
    return WriteRaw(name, Le64(header.size()) + header + data);
  }

  // Two shards, layer 0 in the first and layer 1 in the second, plus their index.
  void WriteShardedCheckpoint() {
    WriteSafetensors("model-00001-of-00002.safetensors", ShardHeader("l0."), ShardData());
    WriteSafetensors("model-00002-of-00002.safetensors", ShardHeader("l1."), ShardData());
    WriteRaw("model.safetensors.index.json", R"({
      "metadata": {"total_size": 56},
      "weight_map": {
        "l0.a": "model-00001-of-00002.safetensors",
        "l0.b": "model-00001-of-00002.safetensors",
        "l1.a": "model-00002-of-00002.safetensors",
        "l1.b": "model-00002-of-00002.safetensors"
      }
    })");
  }

  std::filesystem::path dir_;
};

// ---- positive -------------------------------------------------------------------------

TEST_F(CheckpointTest, OpensSingleFile) {
  const std::string file = WriteSafetensors("model.safetensors", ShardHeader(""), ShardData());
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->dir(), dir_.string());
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("a", "b"));
  EXPECT_TRUE((*ckpt)->Has("a"));
  EXPECT_FALSE((*ckpt)->Has("c"));

  auto a = (*ckpt)->Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->file, file);
  EXPECT_THAT((*a)->shape, ElementsAre(2, 3));

  auto values = (*ckpt)->ReadF32("a", {2, 3});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(0, 1, 2, 3, 4, 5));

  // The span overload writes into caller memory; bf16 is converted.
  float b[2] = {-7.0f, -7.0f};
  const int64_t b_shape[] = {2};
  ASSERT_TRUE((*ckpt)->ReadF32("b", b_shape, b).ok());
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -3.0f);
}

TEST_F(CheckpointTest, ReadsF16) {
  WriteSafetensors("model.safetensors", R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})",
                   U16Bytes({0x3C00, 0x0001, 0x7C00, 0xFE00}));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto h = (*ckpt)->ReadF32("h", {4});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ((*h)[0], 1.0f);
  EXPECT_EQ((*h)[1], 5.9604644775390625e-08f);  // 2^-24
  EXPECT_TRUE(std::isinf((*h)[2]) && (*h)[2] > 0);
  EXPECT_TRUE(std::isnan((*h)[3]));
}

TEST_F(CheckpointTest, OpensShardedCheckpoint) {
  WriteShardedCheckpoint();
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("l0.a", "l0.b", "l1.a", "l1.b"));

  auto l1a = (*ckpt)->Get("l1.a");
  ASSERT_TRUE(l1a.ok());
  EXPECT_EQ((*l1a)->file, Path("model-00002-of-00002.safetensors"));
  auto l0b = (*ckpt)->Get("l0.b");
  ASSERT_TRUE(l0b.ok());
  EXPECT_EQ((*l0b)->file, Path("model-00001-of-00002.safetensors"));

  auto values = (*ckpt)->ReadF32("l1.a", {2, 3});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(0, 1, 2, 3, 4, 5));
  auto b = (*ckpt)->ReadF32("l0.b", {2});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(*b, ElementsAre(1.0f, -3.0f));
}

TEST_F(CheckpointTest, IndexIsPreferredOverSingleFile) {
  WriteShardedCheckpoint();
  WriteRaw("model.safetensors", "garbage that would fail to parse");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->Has("l1.b"));
}

// ---- no weights / missing or truncated files ----------------------------------------------

TEST_F(CheckpointTest, EmptyDirectoryIsNotFound) {
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr(dir_.string()), HasSubstr("model.safetensors.index.json"),
                    HasSubstr("model.safetensors")));
}

TEST_F(CheckpointTest, MissingDirectoryIsNotFound) {
  const std::string dir = Path("does-not-exist");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr(dir), HasSubstr("directory does not exist")));
}

TEST_F(CheckpointTest, MissingShardIsNotFound) {
  WriteShardedCheckpoint();
  std::filesystem::remove(Path("model-00002-of-00002.safetensors"));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(Path("model-00002-of-00002.safetensors")),
                                             HasSubstr("model.safetensors.index.json")));
}

TEST_F(CheckpointTest, TruncatedShardIsDataLoss) {
  WriteShardedCheckpoint();
  const std::string header = ShardHeader("l1.");
  // The second tensor's bytes were cut off.
  WriteRaw("model-00002-of-00002.safetensors",
           Le64(header.size()) + header + F32Bytes({0, 1, 2, 3, 4, 5}));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr(Path("model-00002-of-00002.safetensors")), HasSubstr("'l1.b'")));
}

TEST_F(CheckpointTest, TruncatedSingleFileIsDataLoss) {
  const std::string file = WriteRaw("model.safetensors", Le64(4096) + "{\"a\":");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ckpt.status().message(), HasSubstr(file));
}

TEST_F(CheckpointTest, CorruptShardHeaderIsInvalidArgument) {
  WriteShardedCheckpoint();
  WriteSafetensors("model-00001-of-00002.safetensors",
                   R"({"l0.a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                   R"("l0.b":{"dtype":"Q4","shape":[2],"data_offsets":[24,28]}})",
                   ShardData());
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(Path("model-00001-of-00002.safetensors")),
                                             HasSubstr("'l0.b'"), HasSubstr("unknown dtype")));
}

// ---- bad index ------------------------------------------------------------------------------

TEST_F(CheckpointTest, IndexNotJson) {
  WriteShardedCheckpoint();
  const std::string index = WriteRaw("model.safetensors.index.json", R"({"weight_map": {)");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(index), HasSubstr("not valid JSON")));
}

TEST_F(CheckpointTest, EmptyIndexIsNotJson) {
  WriteShardedCheckpoint();
  const std::string index = WriteRaw("model.safetensors.index.json", "");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(index), HasSubstr("not valid JSON")));
}

TEST_F(CheckpointTest, IndexNotObject) {
  const std::string index = WriteRaw("model.safetensors.index.json", R"(["weight_map"])");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(index), HasSubstr("JSON object")));
}

TEST_F(CheckpointTest, IndexWithoutWeightMap) {
  const std::string index =
      WriteRaw("model.safetensors.index.json", R"({"metadata": {"total_size": 0}})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(index), HasSubstr("weight_map")));
}

TEST_F(CheckpointTest, WeightMapNotObject) {
  const std::string index =
      WriteRaw("model.safetensors.index.json", R"({"weight_map": ["model.safetensors"]})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr(index), HasSubstr("\"weight_map\" must be an object")));
}

TEST_F(CheckpointTest, WeightMapValueNotFileName) {
  const std::string index =
      WriteRaw("model.safetensors.index.json", R"({"weight_map": {"l0.a": 1}})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr(index), HasSubstr("'l0.a'")));
}

TEST_F(CheckpointTest, IndexNamesTensorAbsentFromShard) {
  WriteShardedCheckpoint();
  const std::string index = WriteRaw("model.safetensors.index.json", R"({"weight_map": {
      "l0.a": "model-00001-of-00002.safetensors",
      "l0.b": "model-00001-of-00002.safetensors",
      "l0.c": "model-00001-of-00002.safetensors",
      "l1.a": "model-00002-of-00002.safetensors",
      "l1.b": "model-00002-of-00002.safetensors"}})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr("'l0.c'"), HasSubstr(index),
                                             HasSubstr(Path("model-00001-of-00002.safetensors"))));
}

TEST_F(CheckpointTest, IndexPointsTensorAtWrongShard) {
  WriteShardedCheckpoint();
  WriteRaw("model.safetensors.index.json", R"({"weight_map": {
      "l0.a": "model-00002-of-00002.safetensors",
      "l0.b": "model-00001-of-00002.safetensors",
      "l1.a": "model-00002-of-00002.safetensors",
      "l1.b": "model-00002-of-00002.safetensors"}})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr("'l0.a'"), HasSubstr(Path("model-00002-of-00002.safetensors"))));
}

TEST_F(CheckpointTest, TensorInTwoShards) {
  WriteShardedCheckpoint();
  // The second shard also holds l0.a.
  WriteSafetensors("model-00002-of-00002.safetensors",
                   R"({"l1.a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                   R"("l1.b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
                   R"("l0.a":{"dtype":"F32","shape":[1],"data_offsets":[28,32]}})",
                   ShardData() + F32Bytes({9}));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr("'l0.a'"), HasSubstr(Path("model-00001-of-00002.safetensors")),
                    HasSubstr(Path("model-00002-of-00002.safetensors"))));
}

// ---- reading: missing tensor, wrong shape, unconvertible dtype ----------------------------

TEST_F(CheckpointTest, MissingTensorIsNotFound) {
  WriteShardedCheckpoint();
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();

  auto view = (*ckpt)->Get("l2.a");
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(view.status().message(), AllOf(HasSubstr("'l2.a'"), HasSubstr(dir_.string())));

  auto values = (*ckpt)->ReadF32("l2.a", {2, 3});
  ASSERT_FALSE(values.ok());
  EXPECT_EQ(values.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(values.status().message(), AllOf(HasSubstr("'l2.a'"), HasSubstr(dir_.string())));

  float out[6];
  const int64_t shape[] = {2, 3};
  absl::Status s = (*ckpt)->ReadF32("l2.a", shape, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'l2.a'"));
}

TEST_F(CheckpointTest, WrongShapeNamesBothShapes) {
  WriteShardedCheckpoint();
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();

  auto values = (*ckpt)->ReadF32("l1.a", {3, 2});  // same numel, transposed
  ASSERT_FALSE(values.ok());
  EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(values.status().message(),
              AllOf(HasSubstr("'l1.a'"), HasSubstr(Path("model-00002-of-00002.safetensors")),
                    HasSubstr("[2, 3]"), HasSubstr("[3, 2]")));

  // Different rank through the span overload; `out` must stay untouched.
  float out[6] = {-1, -1, -1, -1, -1, -1};
  const int64_t flat[] = {6};
  absl::Status s = (*ckpt)->ReadF32("l1.a", flat, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'l1.a'"), HasSubstr("[2, 3]"), HasSubstr("[6]")));
  EXPECT_EQ(out[0], -1.0f);
}

TEST_F(CheckpointTest, UnconvertibleDtypeIsInvalidArgument) {
  const std::string file = WriteSafetensors(
      "model.safetensors", R"({"ids":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
      F32Bytes({1, 2}));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto values = (*ckpt)->ReadF32("ids", {2});
  ASSERT_FALSE(values.ok());
  EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(values.status().message(),
              AllOf(HasSubstr("'ids'"), HasSubstr(file), HasSubstr("I32")));
}

}  // namespace
}  // namespace moe
