#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"

namespace moe {

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, const LoadOptions& options) {
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

absl::StatusOr<std::vector<GenerationResult>> Generate(
    Model& model, std::span<const GenerationRequest> requests, GenerationStats* stats,
    const std::function<void(int, int32_t)>& on_token) {
  const ModelConfig& cfg = model.config();
  const int n = static_cast<int>(requests.size());
  int blocks = 0;
  for (int i = 0; i < n; ++i) {
    const GenerationRequest& r = requests[i];
    if (absl::Status s = ValidateGeneration(r.prompt, r.max_tokens, r.sampling, cfg); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("request ", i, ": ", s.message()));
    }
    const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_tokens;
    blocks += static_cast<int>((total + kKvBlockSize - 1) / kKvBlockSize);
  }
  std::vector<GenerationResult> results(n);
  if (n == 0) return results;
  MOE_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(model.backend(), model.KvShape(blocks)));

  struct Seq {
    std::vector<int32_t> blocks;
    int32_t cached = 0;            // tokens in the KV cache
    std::vector<int32_t> pending;  // tokens to feed next step
    Sampler sampler;
    bool done = false;
  };
  std::vector<Seq> seqs;
  seqs.reserve(n);
  for (int i = 0; i < n; ++i) {
    seqs.push_back(Seq{{}, 0, requests[i].prompt, Sampler(requests[i].sampling), false});
    // Capacity for the whole request was counted above, so this cannot fail.
    kv.pool->EnsureCapacity(&seqs.back().blocks,
                            static_cast<int>(requests[i].prompt.size()) + requests[i].max_tokens);
  }

  using Clock = std::chrono::steady_clock;
  Batch batch;
  ForwardOutput out;
  GenerationStats local;
  bool first = true;
  while (true) {
    batch = Batch();
    std::vector<int> batch_req;
    for (int i = 0; i < n; ++i) {
      if (seqs[i].done) continue;
      batch.AddSequence(seqs[i].pending, seqs[i].cached, seqs[i].blocks.data(), /*sample=*/true);
      batch_req.push_back(i);
    }
    if (batch_req.empty()) break;
    const auto t0 = Clock::now();
    MOE_RETURN_IF_ERROR(model.Forward(batch, *kv.storage, &out));
    const int V = cfg.vocab_size;
    for (size_t r = 0; r < batch_req.size(); ++r) {
      const int i = batch_req[r];
      Seq& s = seqs[i];
      s.cached += static_cast<int32_t>(s.pending.size());
      const int32_t tok = s.sampler.Sample(
          std::span<const float>(out.logits.data() + r * static_cast<size_t>(V), V));
      results[i].tokens.push_back(tok);
      if (on_token) on_token(i, tok);
      const bool eos = !requests[i].ignore_eos &&
                       std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), tok) !=
                           cfg.eos_token_ids.end();
      if (eos) {
        results[i].finish = StopReason::kStop;
        s.done = true;
      } else if (static_cast<int>(results[i].tokens.size()) >= requests[i].max_tokens) {
        results[i].finish = StopReason::kLength;
        s.done = true;
      }
      s.pending.assign(1, tok);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (first) {
      local.prefill_tokens += batch.num_tokens();
      local.prefill_seconds += secs;
      first = false;
    } else {
      local.decode_tokens += batch.num_tokens();
      local.decode_seconds += secs;
    }
    ++local.steps;
  }
  if (stats != nullptr) *stats = local;
  return results;
}

}  // namespace moe
