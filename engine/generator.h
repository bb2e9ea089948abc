// Loading a model directory and running a fixed set of requests to completion in flat
// batches: the engine-level path behind moe-generate and the golden tests. (The serving
// scheduler of moe-server replaces the fixed set with continuous batching.)
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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
};

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

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, not empty
  int max_tokens = 16;          // >= 1
  SamplingParams sampling;
  bool ignore_eos = false;
};

// Why a request ended; the batch generator and the serving engine share it.
enum class StopReason {
  kStop,    // EOS, a stop token id or a stop string
  kLength,  // max_tokens or the context
  kAbort,   // the serving engine only: Abort(), Cancel(), deadline, or shutdown
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (an EOS that stopped it included)
  StopReason finish = StopReason::kLength;
};

struct GenerationStats {
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  int steps = 0;
};

// Runs all requests together: one prefill step over every prompt in one flat batch, then
// decode steps of one token per unfinished sequence. Stops a sequence on an EOS id of the
// model's config (unless ignore_eos) or at max_tokens. `on_token(request, id)` is called
// for every generated token. InvalidArgument for an empty prompt, max_tokens < 1, a
// prompt plus max_tokens longer than max_position_embeddings, bad sampling parameters.
absl::StatusOr<std::vector<GenerationResult>> Generate(
    Model& model, std::span<const GenerationRequest> requests, GenerationStats* stats = nullptr,
    const std::function<void(int, int32_t)>& on_token = nullptr);

}  // namespace moe
