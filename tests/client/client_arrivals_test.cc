#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "client/arrivals.h"

namespace moe::client {
namespace {

struct GapStats {
  double mean = 0;
  double cv = 0;  // standard deviation / mean
};

GapStats Gaps(const std::vector<double>& t) {
  const size_t n = t.size() - 1;
  double sum = 0, sum_sq = 0;
  for (size_t i = 1; i < t.size(); ++i) {
    const double g = t[i] - t[i - 1];
    sum += g;
    sum_sq += g * g;
  }
  GapStats s;
  s.mean = sum / n;
  s.cv = std::sqrt(sum_sq / n - s.mean * s.mean) / s.mean;
  return s;
}

TEST(ArrivalsTest, ShapeOfTheSchedule) {
  const std::vector<double> t = ArrivalTimes(500, 10.0, 1.0, 42);
  ASSERT_EQ(t.size(), 500u);
  EXPECT_EQ(t[0], 0.0);
  for (size_t i = 1; i < t.size(); ++i) EXPECT_LE(t[i - 1], t[i]) << i;
  EXPECT_GT(t.back(), 0.0);
  EXPECT_TRUE(ArrivalTimes(0, 10.0, 1.0, 42).empty());
  EXPECT_TRUE(ArrivalTimes(-3, 10.0, 1.0, 42).empty());
}

TEST(ArrivalsTest, SeededReproducibility) {
  EXPECT_EQ(ArrivalTimes(100, 5.0, 0.5, 7), ArrivalTimes(100, 5.0, 0.5, 7));
  EXPECT_NE(ArrivalTimes(100, 5.0, 0.5, 7), ArrivalTimes(100, 5.0, 0.5, 8));
  // The incremental schedule gives the same times as the vector.
  const std::vector<double> t = ArrivalTimes(50, 3.0, 2.0, 9);
  ArrivalSchedule schedule(3.0, 2.0, 9);
  for (double expected : t) EXPECT_EQ(schedule.Next(), expected);
}

TEST(ArrivalsTest, MeanGapIsOneOverRate) {
  constexpr int kN = 20001;  // 20,000 gaps
  for (double burstiness : {1.0, 0.5, 4.0}) {
    for (double rate : {2.0, 50.0}) {
      const GapStats s = Gaps(ArrivalTimes(kN, rate, burstiness, 1234));
      EXPECT_NEAR(s.mean * rate, 1.0, 0.03) << "rate " << rate << " burstiness " << burstiness;
    }
  }
}

TEST(ArrivalsTest, BurstinessSetsTheCoefficientOfVariation) {
  // Gamma with shape k has CV 1/sqrt(k): exponential (k = 1) gives 1, k = 0.25 gives 2,
  // k = 4 gives 0.5.
  constexpr int kN = 20001;
  const GapStats poisson = Gaps(ArrivalTimes(kN, 10.0, 1.0, 99));
  const GapStats bursty = Gaps(ArrivalTimes(kN, 10.0, 0.25, 99));
  const GapStats regular = Gaps(ArrivalTimes(kN, 10.0, 4.0, 99));
  EXPECT_NEAR(poisson.cv, 1.0, 0.05);
  EXPECT_NEAR(bursty.cv, 2.0, 0.15);
  EXPECT_NEAR(regular.cv, 0.5, 0.03);
  EXPECT_GT(bursty.cv, poisson.cv * 1.5);
  EXPECT_LT(regular.cv, poisson.cv);
}

TEST(ArrivalsTest, InfiniteRateSendsEverythingAtOnce) {
  const std::vector<double> t = ArrivalTimes(100, std::numeric_limits<double>::infinity(), 1.0, 3);
  ASSERT_EQ(t.size(), 100u);
  for (double x : t) EXPECT_EQ(x, 0.0);
}

TEST(ArrivalsTest, Validation) {
  EXPECT_TRUE(ValidateArrivalParams(1.0, 1.0).ok());
  EXPECT_TRUE(ValidateArrivalParams(std::numeric_limits<double>::infinity(), 0.1).ok());
  EXPECT_FALSE(ValidateArrivalParams(0.0, 1.0).ok());
  EXPECT_FALSE(ValidateArrivalParams(-1.0, 1.0).ok());
  EXPECT_FALSE(ValidateArrivalParams(std::nan(""), 1.0).ok());
  EXPECT_FALSE(ValidateArrivalParams(1.0, 0.0).ok());
  EXPECT_FALSE(ValidateArrivalParams(1.0, std::numeric_limits<double>::infinity()).ok());
  EXPECT_TRUE(ArrivalTimes(10, 0.0, 1.0, 1).empty());
}

}  // namespace
}  // namespace moe::client
