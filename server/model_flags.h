// The flags that choose and load the model, shared by moe-server and moe-generate:
// --model, --dtype, --device and --threads.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "engine/loader.h"

namespace moe::server {

struct ModelFlags {
  std::string model_dir;  // empty: the default model
  std::string dtype = "auto";
  std::string device = "auto";  // auto, cuda or cpu
  int threads = 0;              // 0: one per CPU
};

void AddModelFlags(CLI::App& app, ModelFlags* flags);

// Applies --threads and loads the model with --dtype on --device. InvalidArgument for a bad
// --dtype; the loader's errors otherwise.
absl::StatusOr<LoadedModel> LoadModelFromFlags(const ModelFlags& flags);

}  // namespace moe::server
