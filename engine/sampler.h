// Token sampling from one row of logits: greedy, temperature, top-k, top-p, seeded.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace moe {

struct SamplingParams {
  float temperature = 1.f;       // 0: greedy (argmax)
  int top_k = 0;                 // 0: no top-k filter
  float top_p = 1.f;             // in (0, 1]; 1: no nucleus filter
  std::optional<uint64_t> seed;  // unset: a random seed

  // Temperatures below this are greedy: 1 / temperature would overflow the logits'
  // scale (at 1e-38 it is infinite), and a distribution that sharp is the argmax anyway.
  static constexpr float kGreedyBelow = 1e-5f;

  // InvalidArgument for temperature < 0, top_k < 0, top_p outside (0, 1].
  absl::Status Validate() const;
  bool greedy() const { return temperature < kGreedyBelow; }
};

// One sequence's sampler: owns its random stream, so a seeded request gives the same
// tokens whatever else is in the batch.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: [V]. Greedy picks the lowest id among equal maxima. Otherwise: divide by the
  // temperature, keep the top_k largest, softmax, keep the smallest prefix (by
  // descending probability, ties by id) whose mass reaches top_p, renormalise, draw.
  // Nothing sorts the whole vocabulary unless top_p needs nearly all of it: top_k is a
  // bounded heap, top_p sorts only the entries of the binary-exponent buckets it reaches,
  // and the plain softmax draws in id order.
  int32_t Sample(std::span<const float> logits);
  // A uniform draw in [0, 1) from this sampler's random stream, for a token drawn on the
  // backend (kernels::SampleParams) instead of by Sample.
  float NextUniform();
  const SamplingParams& params() const { return params_; }

 private:
  int32_t DrawFromSorted(int n, double sum);

  SamplingParams params_;
  std::mt19937_64 rng_;
  // Scratch reused from token to token.
  std::vector<float> exps_;
  std::vector<double> weights_;
  std::vector<int32_t> order_;
};

}  // namespace moe
