// Shared by the fuzz targets: a per-process scratch file for the file-based parsers, and
// the default model's directory (the tokenizer, the chat template and the limits the
// OpenAI parser checks against).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

namespace moe::fuzz {

// /dev/shm when it exists (no disk I/O per input), else /tmp.
inline std::string ScratchDir() {
  static const std::string dir = [] {
    const std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return base + "/moe_fuzz_" + std::to_string(getpid());
  }();
  return dir;
}

inline void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

inline std::string DefaultModelDir() { return std::string(MOE_SOURCE_DIR) + "/models/default"; }

// The input split at its first NUL: (before, after). No NUL: (all, "").
inline std::pair<std::string_view, std::string_view> SplitAtNul(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  if (nul == std::string_view::npos) return {all, {}};
  return {all.substr(0, nul), all.substr(nul + 1)};
}

}  // namespace moe::fuzz
