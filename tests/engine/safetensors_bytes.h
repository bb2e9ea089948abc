// Little-endian byte builders for writing safetensors files by hand in tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

namespace moe::testing_bytes {

// u64 little-endian (the safetensors header length).
inline std::string Le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return out;
}

inline std::string F32Bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
  }
  return out;
}

// Raw 16-bit patterns (f16 or bf16).
inline std::string U16Bytes(std::initializer_list<uint16_t> values) {
  std::string out;
  for (uint16_t v : values) {
    out.push_back(static_cast<char>(v & 0xFF));
    out.push_back(static_cast<char>(v >> 8));
  }
  return out;
}

}  // namespace moe::testing_bytes
