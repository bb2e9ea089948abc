// Token sampling from one row of logits: greedy, temperature, top-k, top-p, seeded.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>

#include "absl/status/status.h"

namespace moe {

struct SamplingParams {
  float temperature = 1.f;       // 0: greedy (argmax)
  int top_k = 0;                 // 0: no top-k filter
  float top_p = 1.f;             // in (0, 1]; 1: no nucleus filter
  std::optional<uint64_t> seed;  // unset: a random seed

  // InvalidArgument for temperature < 0, top_k < 0, top_p outside (0, 1].
  absl::Status Validate() const;
  bool greedy() const { return temperature == 0.f; }
};

// One sequence's sampler: owns its random stream, so a seeded request gives the same
// tokens whatever else is in the batch.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: [V]. Greedy picks the lowest id among equal maxima. Otherwise: divide by the
  // temperature, keep the top_k largest, softmax, keep the smallest prefix (by
  // descending probability) whose mass reaches top_p, renormalise, draw.
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace moe
