#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"

namespace moe {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.f && top_p <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed.has_value() ? *params.seed : std::random_device{}()) {}

namespace {

// The lowest id among the largest logits: the max first (vectorised), then the first
// entry equal to it (the CPU backend's ArgMax op is the same).
int32_t ArgMax(std::span<const float> logits) {
  return kernels::cpu::ArgMaxRow(logits.data(), static_cast<int64_t>(logits.size()));
}

}  // namespace

float Sampler::NextUniform() {
  // 24 random bits: every value is a float in [0, 1), never 1.
  return static_cast<float>(rng_() >> 40) * (1.f / 16777216.f);
}

int32_t Sampler::Sample(std::span<const float> logits) {
  const int V = static_cast<int>(logits.size());
  if (params_.greedy()) return ArgMax(logits);
  const float inv_t = 1.f / params_.temperature;
  // Descending by logit, ties by id, so the draw is reproducible.
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };

  if (params_.top_k > 0 && params_.top_k < V) {
    // The k best by a bounded heap (one comparison per entry for most of them), then
    // sorted best first; softmax over those k only.
    const int k = params_.top_k;
    order_.resize(k);
    for (int32_t i = 0; i < k; ++i) order_[i] = i;
    std::make_heap(order_.begin(), order_.end(), better);  // the worst kept on top
    float worst = logits[order_.front()];
    for (int32_t i = k; i < V; ++i) {
      // A later id never beats an equal logit, so only a strictly larger one enters.
      if (!(logits[i] > worst)) continue;
      std::pop_heap(order_.begin(), order_.end(), better);
      order_.back() = i;
      std::push_heap(order_.begin(), order_.end(), better);
      worst = logits[order_.front()];
    }
    std::sort_heap(order_.begin(), order_.end(), better);  // ascending by `better`: best first
    const float zmax = logits[order_[0]];
    weights_.resize(k);
    double sum = 0;
    for (int i = 0; i < k; ++i) {
      weights_[i] = std::exp((logits[order_[i]] - zmax) * inv_t);
      sum += weights_[i];
    }
    return DrawFromSorted(k, sum);
  }

  // One exp per vocabulary entry, vectorised, shifted by the largest logit (its value:
  // no index needed, so no second pass over the row).
  const float zmax = kernels::cpu::MaxRow(logits.data(), V);
  exps_.resize(V);
  const double sum = kernels::cpu::ExpRow(logits.data(), V, inv_t, zmax, exps_.data());

  if (params_.top_p >= 1.f) {
    // The full distribution: draw by walking the ids in order, no sort; whole blocks
    // first (their sums are independent adds), then within the block.
    constexpr int kBlock = 64;
    std::uniform_real_distribution<double> u(0.0, sum);
    double r = u(rng_);
    int32_t i = 0;
    for (; i + kBlock <= V; i += kBlock) {
      float part[4] = {0.f, 0.f, 0.f, 0.f};
      for (int j = 0; j < kBlock; j += 4) {
        for (int l = 0; l < 4; ++l) part[l] += exps_[i + j + l];
      }
      const double block = (static_cast<double>(part[0]) + part[1]) + (part[2] + part[3]);
      if (r < block) break;
      r -= block;
    }
    for (; i < V; ++i) {
      r -= exps_[i];
      if (r < 0) return i;
    }
    // Rounding left r just above the total: the last entry with any weight.
    for (int32_t last = V - 1; last > 0; --last) {
      if (exps_[last] > 0) return last;
    }
    return 0;
  }

  // Nucleus: the smallest best-first prefix whose mass reaches top_p. The weights are
  // bucketed by their binary exponent; walking the buckets from the top finds the one
  // where the mass reaches top_p, and only the entries in it and above (each outweighs
  // every entry below) are sorted: a few dozen for a trained model's row.
  double bucket_mass[2][256] = {};
  for (int32_t i = 0; i < V; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &exps_[i], sizeof(bits));
    bucket_mass[i & 1][bits >> 23] += exps_[i];  // two tables: no chain of adds to one slot
  }
  double total = 0;
  for (int e = 0; e < 256; ++e) total += bucket_mass[0][e] + bucket_mass[1][e];
  const double target = params_.top_p * total;
  uint32_t boundary = 0;
  double above = 0;
  for (int e = 255; e >= 0; --e) {
    above += bucket_mass[0][e] + bucket_mass[1][e];
    if (above >= target) {
      boundary = static_cast<uint32_t>(e);
      break;
    }
  }
  order_.clear();
  for (int32_t i = 0; i < V; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &exps_[i], sizeof(bits));
    if ((bits >> 23) >= boundary) order_.push_back(i);
  }
  std::sort(order_.begin(), order_.end(), better);
  const int n = static_cast<int>(order_.size());
  weights_.resize(n);
  for (int i = 0; i < n; ++i) weights_[i] = exps_[order_[i]];
  return DrawFromSorted(n, total);
}

// order_[0, n) best first with weights_[0, n); `sum` is the whole distribution's mass
// (the top_p target is a fraction of it): applies top_p, draws.
int32_t Sampler::DrawFromSorted(int n, double sum) {
  if (params_.top_p < 1.f) {
    const double target = params_.top_p * sum;
    double cum = 0;
    for (int i = 0; i < n; ++i) {
      cum += weights_[i];
      if (cum >= target) {
        n = i + 1;
        break;
      }
    }
  }
  double mass = 0;
  for (int i = 0; i < n; ++i) mass += weights_[i];
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng_);
  for (int i = 0; i < n; ++i) {
    r -= weights_[i];
    if (r < 0) return order_[i];
  }
  return order_[n - 1];
}

}  // namespace moe
