// Loading a Hugging Face model directory into a Model (weights in the backend and dtype
// of LoadOptions) and its tokenizer, and the checks every generation request passes.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/batch.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "tokenizer/tokenizer.h"

namespace moe {

struct LoadedModel {
  std::string dir;
  ModelConfig config;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  double load_seconds = 0;     // the whole of LoadModelDir
  int64_t peak_rss_bytes = 0;  // this process's peak resident set after the load (VmHWM)
};

// One line for the startup log: parameters, dtype, resident and streamed weight bytes,
// the checkpoint's tensor bytes, load time, peak RSS, and the backend's kernels.
std::string LoadSummary(const LoadedModel& model);

// This process's peak resident set size so far (VmHWM of /proc/self/status), 0 if unknown.
int64_t PeakRssBytes();

// config.json (+ generation_config.json), the safetensors weights and tokenizer.json (+
// tokenizer_config.json) of a Hugging Face model directory.
absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, const LoadOptions& options = {});

// The model used when no --model is given: $MOE_DEFAULT_MODEL if set, else
// ../share/moe-serve/models/default beside the binary (a release bundle), else
// models/default of the source tree this binary was built from.
std::string DefaultModelDir();

// The checks every generation request passes, whoever runs it: a non-empty prompt of ids
// inside the vocabulary, max_tokens >= 1, prompt + max_tokens within the context, valid
// sampling parameters. InvalidArgument naming the field.
absl::Status ValidateGeneration(std::span<const int32_t> prompt, int max_tokens,
                                const SamplingParams& sampling, const ModelConfig& config);

// A request's routing override against the model: top_k in [1, E] or top_p in (0, 1],
// not both, and no weak_rank (the engine's own, for SCMoE). InvalidArgument naming
// "routing.top_k" or "routing.top_p", or saying why this model's router cannot honour one.
// num_routed_experts: E, 0 for a model without MoE layers.
absl::Status ValidateRouting(const RoutingOverride& routing, int num_routed_experts);

// A request's routing from the fields a front end read, each possibly unset: exactly one
// must be set, and then ValidateRouting. An explicit 0 or a negative value stays an error
// rather than reading as RoutingOverride's "unset"; a P below float's range keeps the
// smallest positive float.
absl::StatusOr<RoutingOverride> RequestedRouting(std::optional<int64_t> top_k,
                                                 std::optional<double> top_p,
                                                 int num_routed_experts);

}  // namespace moe
