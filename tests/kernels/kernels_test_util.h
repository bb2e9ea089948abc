// What the kernel tests share: a test suite parameterized by the instruction sets this CPU
// supports (kernels/cpu/isa.h), each test switching the kernels to its own; random inputs;
// the poison value outputs start as.
#pragma once

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/isa.h"

namespace moe::kernels::cpu {

// Outputs are filled with this before a kernel runs, so an element it does not write shows.
inline constexpr float kPoison = -7.25e30f;

inline std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (SetIsa(isa).ok()) out.push_back(isa);
  }
  (void)SetIsa(BestIsa());
  return out;
}

// Switches the kernels to an instruction set for one scope.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : saved_(ActiveIsa()) { EXPECT_TRUE(SetIsa(isa).ok()); }
  ~ScopedIsa() { (void)SetIsa(saved_); }

 private:
  Isa saved_;
};

class IsaTest : public testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { ASSERT_TRUE(SetIsa(GetParam()).ok()); }
  void TearDown() override { (void)SetIsa(BestIsa()); }
};

inline std::string IsaParamName(const testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

}  // namespace moe::kernels::cpu

// INSTANTIATE_ISA_TEST_SUITE(Suite): one instance per supported instruction set.
#define INSTANTIATE_ISA_TEST_SUITE(suite)                                                       \
  INSTANTIATE_TEST_SUITE_P(Isa, suite, testing::ValuesIn(::moe::kernels::cpu::SupportedIsas()), \
                           ::moe::kernels::cpu::IsaParamName)
