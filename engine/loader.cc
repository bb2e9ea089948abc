#include "engine/loader.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"

namespace moe {

int64_t PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

std::string LoadSummary(const LoadedModel& lm) {
  const WeightStats& w = lm.model->weights().stats();
  const double mb = 1.0 / (1 << 20);
  return absl::StrFormat(
      "%s: %.3f B parameters in %s, %.1f MiB resident, %.1f MiB streamed (checkpoint tensors "
      "%.1f MiB), loaded in %.2f s, peak RSS %.1f MiB; %s",
      lm.config.architecture, w.num_parameters / 1e9, kernels::DTypeName(w.dtype),
      w.resident_bytes * mb, w.streamed_bytes * mb, w.checkpoint_bytes * mb, lm.load_seconds,
      lm.peak_rss_bytes * mb, lm.model->backend().description());
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  }
  LoadedModel lm;
  lm.dir = dir;
  MOE_ASSIGN_OR_RETURN(lm.config, LoadModelConfig(dir));
  {
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
    MOE_ASSIGN_OR_RETURN(lm.model, Model::Load(lm.config, *ckpt, options));
  }
  const std::filesystem::path d(dir);
  const std::string tok_config = (d / "tokenizer_config.json").string();
  MOE_ASSIGN_OR_RETURN(lm.tokenizer,
                       Tokenizer::FromFiles((d / "tokenizer.json").string(),
                                            std::filesystem::exists(tok_config) ? tok_config : ""));
  lm.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  lm.peak_rss_bytes = PeakRssBytes();
  return lm;
}

std::string DefaultModelDir() {
  if (const char* env = std::getenv("MOE_DEFAULT_MODEL"); env != nullptr && *env != '\0') {
    return env;
  }
  // A release bundle (deploy/make_bundle.sh) keeps it beside the binaries:
  // <bundle>/bin/moe-server and <bundle>/share/moe-serve/models/default.
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path bundled =
        exe.parent_path().parent_path() / "share/moe-serve/models/default";
    if (std::filesystem::is_directory(bundled, ec)) return bundled.string();
  }
  return std::string(MOE_SOURCE_DIR) + "/models/default";
}

absl::Status ValidateGeneration(std::span<const int32_t> prompt, int max_tokens,
                                const SamplingParams& sampling, const ModelConfig& config) {
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (int32_t id : prompt) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", id, " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 1, got ", max_tokens));
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_tokens;
  if (total > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", prompt.size(), " tokens) + max_tokens (", max_tokens,
                     ") exceeds the context of ", config.max_position_embeddings, " tokens"));
  }
  return sampling.Validate();
}

absl::StatusOr<RoutingOverride> RequestedRouting(std::optional<int64_t> top_k,
                                                 std::optional<double> top_p,
                                                 int num_routed_experts) {
  if (top_k.has_value() == top_p.has_value()) {
    return absl::InvalidArgumentError("routing: give exactly one of top_k and top_p");
  }
  RoutingOverride routing;
  if (top_k) {
    routing.top_k = *top_k > 0 ? static_cast<int32_t>(std::min<int64_t>(*top_k, INT32_MAX)) : -1;
  } else {
    routing.top_p = *top_p > 0 ? std::max(static_cast<float>(*top_p),
                                          std::numeric_limits<float>::denorm_min())
                               : -1.f;  // NaN too
  }
  MOE_RETURN_IF_ERROR(ValidateRouting(routing, num_routed_experts));
  return routing;
}

absl::Status ValidateRouting(const RoutingOverride& routing, int num_routed_experts) {
  if (!routing.any()) return absl::OkStatus();
  if (routing.weak_rank != 0) {
    return absl::InvalidArgumentError("routing: weak_rank is not a request field");
  }
  if (num_routed_experts == 0) {
    return absl::InvalidArgumentError(
        "routing: this model has no routed experts, so its routing cannot be overridden");
  }
  if (routing.top_k != 0 && routing.top_p != 0.f) {
    return absl::InvalidArgumentError("routing: give top_k or top_p, not both");
  }
  if (routing.top_k != 0 && (routing.top_k < 1 || routing.top_k > num_routed_experts)) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing.top_k must be in [1, ", num_routed_experts,
                     "] (the model's routed experts), got ", routing.top_k));
  }
  if (routing.top_p != 0.f && !(routing.top_p > 0.f && routing.top_p <= 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing.top_p must be in (0, 1], got ", routing.top_p));
  }
  return absl::OkStatus();
}

}  // namespace moe
