// SafetensorsFile / MappedFile / ConvertToF32. Every file is written byte by byte from an
// explicit header string and data buffer, so each corruption is visible in the test.
#include "engine/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
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

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "st_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `bytes` verbatim to dir_/name and returns the path.
  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good());
    return path;
  }

  // A well-formed framing: u64 LE header length, the header, then the data buffer.
  std::string Write(const std::string& name, const std::string& header, const std::string& data) {
    return WriteRaw(name, Le64(header.size()) + header + data);
  }

  // Opens `header` + `data` and expects failure with `code` and a message naming the file
  // and every string in `needles`.
  void ExpectOpenError(const std::string& header, const std::string& data, absl::StatusCode code,
                       std::vector<std::string> needles) {
    std::string path = Write("bad.safetensors", header, data);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << header;
    EXPECT_EQ(file.status().code(), code) << file.status();
    EXPECT_THAT(file.status().message(), HasSubstr(path));
    for (const std::string& needle : needles) {
      EXPECT_THAT(file.status().message(), HasSubstr(needle));
    }
  }

  std::filesystem::path dir_;
};

// ---- positive -------------------------------------------------------------------------

TEST_F(SafetensorsTest, ReadsF32TensorsAndOffsets) {
  std::string path = Write("ok.safetensors",
                           R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})",
                           F32Bytes({1.0f, -2.5f, 0.0f, 3.25f, 42.0f}));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->tensors().size(), 2u);
  EXPECT_TRUE((*file)->metadata().empty());

  const TensorView* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "a");
  EXPECT_EQ(a->file, path);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 2));
  EXPECT_EQ(a->numel(), 4);
  EXPECT_EQ(a->nbytes, 16u);
  std::vector<float> out(4, -1.0f);
  ASSERT_TRUE(ConvertToF32(a->dtype, a->data, a->numel(), out.data()).ok());
  EXPECT_THAT(out, ElementsAre(1.0f, -2.5f, 0.0f, 3.25f));

  const TensorView* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->data, a->data + 16);
  float v = 0;
  ASSERT_TRUE(ConvertToF32(b->dtype, b->data, 1, &v).ok());
  EXPECT_EQ(v, 42.0f);

  EXPECT_EQ((*file)->Find("c"), nullptr);
}

TEST_F(SafetensorsTest, ConvertsF16KnownValues) {
  // Reference values from the IEEE 754 binary16 definition.
  const std::string data = U16Bytes(
      {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x3555});
  std::string path =
      Write("f16.safetensors", R"({"h":{"dtype":"F16","shape":[11],"data_offsets":[0,22]}})", data);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* h = (*file)->Find("h");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->dtype, DType::kF16);
  std::vector<float> out(11, 123.0f);
  ASSERT_TRUE(ConvertToF32(h->dtype, h->data, h->numel(), out.data()).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 5.9604644775390625e-08f);  // 2^-24, smallest subnormal
  EXPECT_EQ(out[3], 6.097555160522461e-05f);   // 1023 * 2^-24, largest subnormal
  EXPECT_EQ(out[4], 6.103515625e-05f);         // 2^-14, smallest normal
  EXPECT_EQ(out[5], 65504.0f);                 // largest finite
  EXPECT_EQ(out[6], 0.0f);
  EXPECT_TRUE(std::signbit(out[6]));  // -0
  EXPECT_EQ(out[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[8], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(out[9]));
  EXPECT_EQ(out[10], 0.333251953125f);  // f16 nearest to 1/3
}

#ifdef __FLT16_MAX__
// Every one of the 65536 half bit patterns against the compiler's own _Float16 -> float.
TEST(ConvertToF32Test, F16MatchesCompilerForAllBitPatterns) {
  std::vector<uint16_t> bits(65536);
  for (uint32_t i = 0; i < 65536; ++i) bits[i] = static_cast<uint16_t>(i);
  std::vector<float> out(65536);
  ASSERT_TRUE(
      ConvertToF32(DType::kF16, reinterpret_cast<const std::byte*>(bits.data()), 65536, out.data())
          .ok());
  for (uint32_t i = 0; i < 65536; ++i) {
    _Float16 h;
    std::memcpy(&h, &bits[i], 2);
    const float expected = static_cast<float>(h);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(out[i])) << std::hex << i;
    } else {
      uint32_t got_bits, want_bits;
      std::memcpy(&got_bits, &out[i], 4);
      std::memcpy(&want_bits, &expected, 4);
      ASSERT_EQ(got_bits, want_bits) << std::hex << "half 0x" << i;
    }
  }
}
#endif

TEST_F(SafetensorsTest, ConvertsBF16KnownValues) {
  const std::string data = U16Bytes({0x3F80, 0xC040, 0x4049, 0x0001, 0x7F80, 0xFF80, 0x7FC0});
  std::string path = Write("bf16.safetensors",
                           R"({"w":{"dtype":"BF16","shape":[7],"data_offsets":[0,14]}})", data);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* w = (*file)->Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::kBF16);
  std::vector<float> out(7, 123.0f);
  ASSERT_TRUE(ConvertToF32(w->dtype, w->data, w->numel(), out.data()).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], 3.140625f);
  EXPECT_EQ(out[3], 9.183549615799121e-41f);  // 2^-133, smallest bf16 subnormal
  EXPECT_EQ(out[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[5], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(out[6]));
}

TEST_F(SafetensorsTest, ReadsMetadata) {
  std::string path = Write("meta.safetensors",
                           R"({"__metadata__":{"format":"pt","note":"hi"},)"
                           R"("x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                           F32Bytes({7.0f}));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().size(), 2u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("note"), "hi");
  EXPECT_EQ((*file)->tensors().size(), 1u);  // __metadata__ is not a tensor
  const TensorView* x = (*file)->Find("x");
  ASSERT_NE(x, nullptr);
  EXPECT_TRUE(x->shape.empty());
  EXPECT_EQ(x->numel(), 1);  // a scalar
}

TEST_F(SafetensorsTest, AcceptsPaddedHeaderEmptyTensorsAndEveryDType) {
  // The reference writer pads the header with spaces to an 8-byte multiple.
  std::string header = R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                       R"("i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                       R"("f64":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
                       R"("i32":{"dtype":"I32","shape":[1],"data_offsets":[16,20]},)"
                       R"("i16":{"dtype":"I16","shape":[1],"data_offsets":[20,22]},)"
                       R"("i8":{"dtype":"I8","shape":[1],"data_offsets":[22,23]},)"
                       R"("u8":{"dtype":"U8","shape":[1],"data_offsets":[23,24]},)"
                       R"("b":{"dtype":"BOOL","shape":[1],"data_offsets":[24,25]},)"
                       R"("e4":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[25,26]},)"
                       R"("e5":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[26,27]},)"
                       R"("z":{"dtype":"BF16","shape":[0],"data_offsets":[27,27]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string path = Write("all.safetensors", header, std::string(27, '\x01'));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 11u);
  EXPECT_EQ((*file)->Find("e")->numel(), 0);
  EXPECT_EQ((*file)->Find("e")->nbytes, 0u);
  EXPECT_EQ((*file)->Find("i64")->dtype, DType::kI64);
  EXPECT_EQ((*file)->Find("e4")->dtype, DType::kF8E4M3);
  EXPECT_EQ((*file)->Find("e5")->dtype, DType::kF8E5M2);
  EXPECT_EQ((*file)->Find("b")->dtype, DType::kBool);

  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeName(DType::kF8E5M2), "F8_E5M2");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
}

TEST_F(SafetensorsTest, EmptyHeaderObjectIsAValidEmptyFile) {
  std::string path = Write("empty.safetensors", "{}", "");
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(ConvertToF32Test, RefusesOtherDTypesAndNegativeCounts) {
  const std::byte src[8] = {};
  float dst[2];
  for (DType dtype : {DType::kF64, DType::kI64, DType::kI32, DType::kI16, DType::kI8, DType::kU8,
                      DType::kBool, DType::kF8E4M3, DType::kF8E5M2}) {
    absl::Status s = ConvertToF32(dtype, src, 1, dst);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << DTypeName(dtype);
    EXPECT_THAT(s.message(), HasSubstr(DTypeName(dtype)));
  }
  EXPECT_EQ(ConvertToF32(DType::kF32, src, -1, dst).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ConvertToF32(DType::kF32, src, 0, nullptr).ok());
}

// ---- missing or truncated file ---------------------------------------------------------

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  std::string path = (dir_ / "nope.safetensors").string();
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

TEST_F(SafetensorsTest, DirectoryIsRejected) {
  auto file = SafetensorsFile::Open(dir_.string());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(dir_.string()));
}

TEST_F(SafetensorsTest, ZeroLengthFileIsDataLoss) {
  std::string path = WriteRaw("zero.safetensors", "");
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ((*mapped)->size(), 0u);

  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), AllOf(HasSubstr(path), HasSubstr("8-byte")));
}

TEST_F(SafetensorsTest, FileShorterThanLengthPrefixIsDataLoss) {
  std::string path = WriteRaw("short.safetensors", std::string("\x10\x00\x00", 3));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), AllOf(HasSubstr(path), HasSubstr("3 bytes")));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFileIsDataLoss) {
  // Claims a 100-byte header, holds 10 bytes of it: a truncated download.
  std::string path = WriteRaw("trunc.safetensors", Le64(100) + R"({"a":{"dty)");
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(),
              AllOf(HasSubstr(path), HasSubstr("header length 100"), HasSubstr("truncated")));
}

TEST_F(SafetensorsTest, AbsurdHeaderLengthIsInvalidArgument) {
  std::string path = WriteRaw("huge.safetensors", Le64(uint64_t{1} << 62) + "{}");
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), AllOf(HasSubstr(path), HasSubstr("exceeds the limit")));
}

TEST_F(SafetensorsTest, TensorDataPastEndOfBufferIsDataLoss) {
  // Header promises 16 bytes, the file was cut after 8.
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kDataLoss, {"'w'", "[0, 16]", "truncated"});
}

// ---- corrupt header: JSON ---------------------------------------------------------------

TEST_F(SafetensorsTest, HeaderNotJson) {
  ExpectOpenError(R"({"w":{"dtype":"F32",)", "", absl::StatusCode::kInvalidArgument,
                  {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderInvalidUtf8) {
  ExpectOpenError("{\"w\xff\":{}}", "", absl::StatusCode::kInvalidArgument, {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  ExpectOpenError(R"([{"dtype":"F32","shape":[1],"data_offsets":[0,4]}])", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"must be a JSON object", "array"});
}

TEST_F(SafetensorsTest, TensorEntryNotObject) {
  ExpectOpenError(R"({"w":[0,4]})", F32Bytes({1}), absl::StatusCode::kInvalidArgument,
                  {"'w'", "JSON object"});
}

TEST_F(SafetensorsTest, TensorMissingDtype) {
  ExpectOpenError(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "missing \"dtype\""});
}

TEST_F(SafetensorsTest, TensorMissingShape) {
  ExpectOpenError(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "missing \"shape\""});
}

TEST_F(SafetensorsTest, TensorMissingDataOffsets) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[1]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "missing \"data_offsets\""});
}

TEST_F(SafetensorsTest, DtypeNotString) {
  ExpectOpenError(R"({"w":{"dtype":1,"shape":[1],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "\"dtype\" must be a string"});
}

TEST_F(SafetensorsTest, ShapeNotArray) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "\"shape\" must be an array"});
}

TEST_F(SafetensorsTest, ShapeHoldsNonInteger) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "must hold integers"});
}

TEST_F(SafetensorsTest, DataOffsetsWrongArity) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "\"data_offsets\" must be"});
}

TEST_F(SafetensorsTest, DataOffsetsNotIntegers) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "\"data_offsets\" must be"});
}

TEST_F(SafetensorsTest, DataOffsetsNegative) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "non-negative"});
}

// ---- corrupt header: dtype and shape -----------------------------------------------------

TEST_F(SafetensorsTest, UnknownDtype) {
  ExpectOpenError(R"({"w":{"dtype":"F4","shape":[1],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "unknown dtype \"F4\""});
}

TEST_F(SafetensorsTest, DtypeIsCaseSensitive) {
  ExpectOpenError(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "unknown dtype \"f32\""});
}

TEST_F(SafetensorsTest, NegativeDimension) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}})", F32Bytes({1}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "negative dimension -1"});
}

TEST_F(SafetensorsTest, ElementCountOverflow) {
  // 2^32 * 2^32 elements wraps to 0 in 64-bit arithmetic; unchecked it would "match" [0, 0].
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})",
                  "", absl::StatusCode::kInvalidArgument, {"'w'", "overflows"});
}

TEST_F(SafetensorsTest, ByteCountOverflow) {
  // 2^62 elements fit in int64, 2^62 * 4 bytes do not.
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", "",
                  absl::StatusCode::kInvalidArgument, {"'w'", "overflows"});
}

TEST_F(SafetensorsTest, ShapeDisagreesWithOffsets) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "needs 12 bytes", "span 8"});
}

TEST_F(SafetensorsTest, DtypeSizeDisagreesWithOffsets) {
  // Two bf16 values take 4 bytes, not 8.
  ExpectOpenError(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "needs 4 bytes"});
}

// ---- corrupt header: offsets out of range, overlapping, gaps ------------------------------

TEST_F(SafetensorsTest, BeginAfterEnd) {
  ExpectOpenError(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"'w'", "begin after end"});
}

TEST_F(SafetensorsTest, OffsetsBeyondBufferAfterValidTensor) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[400,404]}})",
                  F32Bytes({1}), absl::StatusCode::kDataLoss, {"'b'", "[400, 404]"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  F32Bytes({1, 2, 3}), absl::StatusCode::kInvalidArgument,
                  {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, TensorsSharingBytes) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                  F32Bytes({1}), absl::StatusCode::kInvalidArgument, {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, GapBetweenTensors) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                  F32Bytes({1, 2, 3}), absl::StatusCode::kInvalidArgument,
                  {"'b'", "[4, 8)", "belong to no tensor"});
}

TEST_F(SafetensorsTest, GapAtStartOfBuffer) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"'a'", "[0, 4)", "belong to no tensor"});
}

TEST_F(SafetensorsTest, TrailingBytesAfterLastTensor) {
  ExpectOpenError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", F32Bytes({1, 2}),
                  absl::StatusCode::kInvalidArgument, {"[4, 8)", "belong to no tensor"});
}

// ---- __metadata__ -------------------------------------------------------------------------

TEST_F(SafetensorsTest, MetadataNotObject) {
  ExpectOpenError(R"({"__metadata__":["pt"]})", "", absl::StatusCode::kInvalidArgument,
                  {"__metadata__", "must be an object"});
}

TEST_F(SafetensorsTest, MetadataValueNotString) {
  ExpectOpenError(R"({"__metadata__":{"format":"pt","step":100}})", "",
                  absl::StatusCode::kInvalidArgument, {"__metadata__", "\"step\"", "string"});
}

}  // namespace
}  // namespace moe
