// The CPU GEMM (kernels/cpu/gemm.h) on every instruction set this CPU has: against a
// double-precision reference over odd shapes, with bias, row indirection and strides;
// bit-identical results for a row whatever else is in the batch, however it is split
// between threads, and whether its bf16 weights are read as bf16 or as their fp32 widening.
#include "kernels/cpu/gemm.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/parallel.h"
#include "tests/kernels/kernels_test_util.h"

namespace moe::kernels::cpu {
namespace {

// A row-major fp32 [N, K] matrix packed into kPanels16 of `dtype`.
struct Packed {
  std::vector<char> bytes;
  MatrixRef ref;
};

Packed Pack(const std::vector<float>& w, int64_t N, int64_t K, DType dtype) {
  Packed p;
  p.bytes.resize(MatrixBytes(dtype, WeightLayout::kPanels16, N, K), 0x5a);
  PackSource src{w.data(), SourceType::kF32, N};
  PackPanels(std::span(&src, 1), K, dtype, p.bytes.data());
  p.ref = {p.bytes.data(), dtype, WeightLayout::kPanels16, N, K};
  return p;
}

// The weights the kernel sees: bf16-rounded for bf16.
std::vector<float> AsStored(const std::vector<float>& w, DType dtype) {
  if (dtype == DType::kF32) return w;
  std::vector<float> r(w.size());
  for (size_t i = 0; i < w.size(); ++i) r[i] = Bf16ToFloat(FloatToBf16(w[i]));
  return r;
}

struct Shape {
  int M, N, K;
};

class GemmTest : public IsaTest {};

TEST_P(GemmTest, MatchesDoubleReference) {
  std::mt19937 rng(11);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Shape s : {Shape{1, 1, 1}, Shape{1, 16, 64}, Shape{2, 17, 3}, Shape{5, 33, 31},
                    Shape{7, 100, 257}, Shape{13, 15, 2}, Shape{97, 48, 65}, Shape{200, 70, 40}}) {
      for (bool bias : {false, true}) {
        SCOPED_TRACE(testing::Message() << DTypeName(dtype) << " M=" << s.M << " N=" << s.N
                                        << " K=" << s.K << " bias=" << bias);
        const int64_t ldx = s.K + 3, ldy = s.N + 5;
        std::vector<float> x = Random(static_cast<size_t>(s.M) * ldx, rng);
        std::vector<float> w = Random(static_cast<size_t>(s.N) * s.K, rng, 0.3f);
        std::vector<float> b = Random(s.N, rng);
        Packed packed = Pack(w, s.N, s.K, dtype);
        std::vector<float> y(static_cast<size_t>(s.M) * ldy, kPoison);
        LinearParams p;
        p.x = x.data();
        p.ldx = ldx;
        p.m = s.M;
        p.w = packed.ref;
        p.bias = bias ? b.data() : nullptr;
        p.y = y.data();
        p.ldy = ldy;
        ASSERT_TRUE(CanImplement(p).ok());
        Linear(p);
        const std::vector<float> ws = AsStored(w, dtype);
        for (int m = 0; m < s.M; ++m) {
          for (int n = 0; n < ldy; ++n) {
            const float got = y[m * ldy + n];
            if (n >= s.N) {
              ASSERT_EQ(got, kPoison) << "wrote past N at row " << m << " col " << n;
              continue;
            }
            double want = bias ? b[n] : 0.0, mag = std::fabs(want);
            for (int k = 0; k < s.K; ++k) {
              want += static_cast<double>(x[m * ldx + k]) * ws[static_cast<size_t>(n) * s.K + k];
              mag += std::fabs(static_cast<double>(x[m * ldx + k]) *
                               ws[static_cast<size_t>(n) * s.K + k]);
            }
            ASSERT_NEAR(got, want, 1e-6 * (mag + 1.0) * 4) << "row " << m << " col " << n;
          }
        }
      }
    }
  }
}

TEST_P(GemmTest, RowIndirectionReadsTheNamedRows) {
  std::mt19937 rng(12);
  const int K = 40, N = 24, rows = 9;
  std::vector<float> x = Random(static_cast<size_t>(rows) * K, rng);
  Packed packed = Pack(Random(static_cast<size_t>(N) * K, rng), N, K, DType::kBF16);
  const std::vector<int32_t> pick = {8, 0, 3, 3, 7};
  std::vector<float> gathered;
  for (int32_t r : pick)
    gathered.insert(gathered.end(), x.begin() + r * K, x.begin() + (r + 1) * K);
  std::vector<float> direct(pick.size() * N, kPoison), indirect(pick.size() * N, kPoison);
  LinearParams p;
  p.x = gathered.data();
  p.ldx = K;
  p.m = static_cast<int>(pick.size());
  p.w = packed.ref;
  p.y = direct.data();
  p.ldy = N;
  Linear(p);
  p.x = x.data();
  p.x_rows = pick.data();
  p.y = indirect.data();
  Linear(p);
  EXPECT_EQ(std::memcmp(direct.data(), indirect.data(), direct.size() * sizeof(float)), 0);
}

// A row's output is bit-identical alone, at any position in any batch, and with any
// number of threads: the reduction order is fixed by K alone.
TEST_P(GemmTest, BatchInvariantBitForBit) {
  std::mt19937 rng(13);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const int K = 777, N = 130, M = 61;
    std::vector<float> x = Random(static_cast<size_t>(M) * K, rng);
    Packed packed = Pack(Random(static_cast<size_t>(N) * K, rng, 0.05f), N, K, dtype);
    auto run = [&](int first, int count) {
      std::vector<float> y(static_cast<size_t>(count) * N);
      LinearParams p;
      p.x = x.data() + static_cast<size_t>(first) * K;
      p.ldx = K;
      p.m = count;
      p.w = packed.ref;
      p.y = y.data();
      p.ldy = N;
      Linear(p);
      return y;
    };
    const std::vector<float> all = run(0, M);
    for (int first : {0, 5, 30, 60}) {
      for (int count : {1, 2, 3, 6, 7}) {
        if (first + count > M) continue;
        const std::vector<float> part = run(first, count);
        ASSERT_EQ(std::memcmp(part.data(), all.data() + static_cast<size_t>(first) * N,
                              part.size() * sizeof(float)),
                  0)
            << DTypeName(dtype) << " rows [" << first << ", " << first + count << ")";
      }
    }
    const int threads = NumThreads();
    SetNumThreads(1);
    const std::vector<float> serial = run(0, M);
    SetNumThreads(threads);
    EXPECT_EQ(std::memcmp(serial.data(), all.data(), all.size() * sizeof(float)), 0);
  }
}

TEST_P(GemmTest, Bf16WeightsGiveWhatTheirFp32WideningGives) {
  std::mt19937 rng(14);
  const int K = 513, N = 77, M = 9;
  std::vector<float> x = Random(static_cast<size_t>(M) * K, rng);
  const std::vector<float> w = AsStored(Random(static_cast<size_t>(N) * K, rng), DType::kBF16);
  Packed as_f32 = Pack(w, N, K, DType::kF32), as_bf16 = Pack(w, N, K, DType::kBF16);
  std::vector<float> y32(static_cast<size_t>(M) * N), y16(static_cast<size_t>(M) * N);
  LinearParams p;
  p.x = x.data();
  p.ldx = K;
  p.m = M;
  p.ldy = N;
  p.w = as_f32.ref;
  p.y = y32.data();
  Linear(p);
  p.w = as_bf16.ref;
  p.y = y16.data();
  Linear(p);
  EXPECT_EQ(std::memcmp(y32.data(), y16.data(), y32.size() * sizeof(float)), 0);
}

TEST_P(GemmTest, LinearBatchEqualsSeparateLinears) {
  std::mt19937 rng(15);
  std::vector<Packed> mats;
  std::vector<std::vector<float>> xs, together, alone;
  std::vector<LinearParams> problems;
  const Shape shapes[] = {{3, 64, 32}, {1, 200, 48}, {40, 16, 100}, {0, 8, 8}, {9, 33, 17}};
  for (const Shape& s : shapes) {
    mats.push_back(Pack(Random(static_cast<size_t>(s.N) * s.K, rng), s.N, s.K, DType::kBF16));
    xs.push_back(Random(static_cast<size_t>(std::max(s.M, 1)) * s.K, rng));
    together.emplace_back(static_cast<size_t>(s.M) * s.N);
    alone.emplace_back(static_cast<size_t>(s.M) * s.N);
  }
  for (size_t i = 0; i < mats.size(); ++i) {
    LinearParams p;
    p.x = xs[i].data();
    p.ldx = shapes[i].K;
    p.m = shapes[i].M;
    p.w = mats[i].ref;
    p.y = together[i].data();
    p.ldy = shapes[i].N;
    problems.push_back(p);
    p.y = alone[i].data();
    Linear(p);
  }
  LinearBatch(problems);
  for (size_t i = 0; i < mats.size(); ++i) {
    EXPECT_EQ(together[i], alone[i]) << "problem " << i;
  }
}

INSTANTIATE_ISA_TEST_SUITE(GemmTest);

TEST(PackTest, PanelLayoutAndRounding) {
  // Two stacked sources (rows 0-2 f32, rows 3-19 bf16), K = 3: bf16 pairs (k0, k1), (k2, 0).
  const int K = 3;
  std::vector<float> a(3 * K);
  for (int i = 0; i < 3 * K; ++i) a[i] = 1.f + i;
  std::vector<uint16_t> b(17 * K);
  for (int i = 0; i < 17 * K; ++i) b[i] = FloatToBf16(-0.5f * i);
  const PackSource srcs[] = {{a.data(), SourceType::kF32, 3}, {b.data(), SourceType::kBF16, 17}};
  const int64_t rows = 20;
  std::vector<uint16_t> packed(MatrixBytes(DType::kBF16, WeightLayout::kPanels16, rows, K) / 2,
                               0xffff);
  PackPanels(srcs, K, DType::kBF16, packed.data());
  ASSERT_EQ(packed.size(), 2u * 4 * 16);  // 2 panels x 2 pairs x 16 columns x 2
  auto at = [&](int row, int k) {
    return packed[(row / 16) * 64 + (k / 2) * 32 + 2 * (row % 16) + k % 2];
  };
  EXPECT_EQ(at(0, 0), FloatToBf16(1.f));
  EXPECT_EQ(at(2, 2), FloatToBf16(9.f));
  EXPECT_EQ(at(3, 0), b[0]);
  EXPECT_EQ(at(19, 2), b[16 * K + 2]);
  EXPECT_EQ(at(5, 3), 0) << "the odd-K pad is zero";
  EXPECT_EQ(at(25, 1), 0) << "rows past the end are zero";
  // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and goes to 1.
  EXPECT_EQ(FloatToBf16(1.f + 1.f / 256), FloatToBf16(1.f));
  EXPECT_EQ(FloatToBf16(1.f + 3.f / 256), FloatToBf16(1.f + 4.f / 256));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  EXPECT_EQ(HalfToFloat(0x3c00), 1.f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0xfbff), -65504.f);
}

TEST(GemmLimitsTest, CanImplementRejectsWhatTheKernelCannotRun) {
  std::vector<float> buf(64);
  LinearParams p;
  p.x = p.y = buf.data();
  p.m = 1;
  p.ldx = p.ldy = 4;
  p.w = {buf.data(), DType::kF32, WeightLayout::kPanels16, 4, 4};
  EXPECT_TRUE(CanImplement(p).ok());
  LinearParams row_major = p;
  row_major.w.layout = WeightLayout::kRowMajor;
  EXPECT_EQ(CanImplement(row_major).code(), absl::StatusCode::kInvalidArgument);
  LinearParams narrow = p;
  narrow.ldx = 3;
  EXPECT_EQ(CanImplement(narrow).code(), absl::StatusCode::kInvalidArgument);
  LinearParams null_y = p;
  null_y.y = nullptr;
  EXPECT_EQ(CanImplement(null_y).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::kernels::cpu
