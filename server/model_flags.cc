#include "server/model_flags.h"

#include "base/cli_checks.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/parallel.h"

namespace moe::server {

void AddModelFlags(CLI::App& app, ModelFlags* flags) {
  app.add_option("--model", flags->model_dir,
                 "Hugging Face model directory (config.json, *.safetensors, tokenizer.json); "
                 "default: the bundled default model");
  app.add_option("--dtype", flags->dtype,
                 "Weights in memory: auto (the checkpoint's: bf16 stays bf16, f16 widens to "
                 "float32), float32 or bfloat16")
      ->capture_default_str();
  app.add_option("--device", flags->device,
                 "Where the model runs: auto (the GPU where this build has CUDA and a device "
                 "is present, else the CPU), cuda or cpu")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}));
  app.add_option("--threads", flags->threads, "CPU kernel threads; 0: one per CPU")
      ->capture_default_str()
      ->check(cli::AtLeast<int>(0));
}

absl::StatusOr<LoadedModel> LoadModelFromFlags(const ModelFlags& flags) {
  absl::StatusOr<WeightDtype> dtype = ParseWeightDtype(flags.dtype);
  if (!dtype.ok())
    return absl::InvalidArgumentError(absl::StrCat("--dtype: ", dtype.status().message()));
  if (flags.threads > 0) kernels::cpu::SetNumThreads(flags.threads);
  LoadOptions options;
  options.dtype = *dtype;
  options.device = flags.device;
  return LoadModelDir(flags.model_dir.empty() ? DefaultModelDir() : flags.model_dir, options);
}

}  // namespace moe::server
