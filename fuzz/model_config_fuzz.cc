// config.json (and generation_config.json after a NUL byte) through LoadModelConfig:
// a status or a config that passed its own validation, never a crash.
#include <filesystem>

#include "engine/model_config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = moe::fuzz::ScratchDir() + "/config";
  std::filesystem::create_directories(dir);
  const auto [config, generation] = moe::fuzz::SplitAtNul(data, size);
  moe::fuzz::WriteFile(dir + "/config.json", config);
  std::error_code ec;
  if (generation.empty()) {
    std::filesystem::remove(dir + "/generation_config.json", ec);
  } else {
    moe::fuzz::WriteFile(dir + "/generation_config.json", generation);
  }
  auto cfg = moe::LoadModelConfig(dir);
  if (cfg.ok()) {
    for (int32_t id : cfg->eos_token_ids) {
      if (id < 0 || id >= cfg->vocab_size) __builtin_trap();  // dropped at load
    }
    if (static_cast<int>(cfg->layer_is_moe.size()) != cfg->num_layers) __builtin_trap();
  }
  return 0;
}
