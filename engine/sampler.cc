#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

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

int32_t Sampler::Sample(std::span<const float> logits) {
  const int V = static_cast<int>(logits.size());
  if (params_.greedy()) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  int keep = V;
  if (params_.top_k > 0 && params_.top_k < V) keep = params_.top_k;
  // Descending by logit, ties by id, so the draw is reproducible.
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (keep < V) {
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
    order.resize(keep);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  const float inv_t = 1.f / params_.temperature;
  const float zmax = logits[order[0]] * inv_t;
  std::vector<double> prob(order.size());
  double sum = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    prob[i] = std::exp(static_cast<double>(logits[order[i]] * inv_t - zmax));
    sum += prob[i];
  }
  size_t n = order.size();
  if (params_.top_p < 1.f) {
    double cum = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      cum += prob[i] / sum;
      if (cum >= params_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  double mass = 0;
  for (size_t i = 0; i < n; ++i) mass += prob[i];
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= prob[i];
    if (r < 0) return order[i];
  }
  return order[n - 1];
}

}  // namespace moe
