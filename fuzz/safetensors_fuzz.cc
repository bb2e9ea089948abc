// The safetensors parser (engine/safetensors.h) on arbitrary file contents: Open either
// refuses the file with a status or gives tensors whose bytes can all be read.
#include <filesystem>
#include <vector>

#include "engine/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = moe::fuzz::ScratchDir();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/model.safetensors";
  moe::fuzz::WriteFile(path, std::string_view(reinterpret_cast<const char*>(data), size));
  auto file = moe::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  std::vector<std::byte> buffer;
  for (const auto& [name, view] : (*file)->tensors()) {
    if (view.nbytes > size) __builtin_trap();  // a tensor larger than the file it is in
    buffer.resize(view.nbytes);
    (void)moe::ReadTensorBytes(view, buffer.data());
  }
  return 0;
}
