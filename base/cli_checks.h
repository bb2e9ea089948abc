// Range checks for command-line flags (CLI11) whose errors read as plain words, e.g.
// "--max-seqs: must be a whole number from 1 to 2147483647, got '0'", instead of CLI11's
// own, which prints the range of a double to 309 digits or says only "Could not convert".
// They check the text before CLI11 converts it, so an overflow gets the same message.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>

namespace moe::cli {

// T in [lo, hi]; for floating T, `lo_open` excludes lo itself ("above 0").
template <typename T>
CLI::Validator Between(T lo, T hi, bool lo_open = false) {
  auto number = [](T v) {
    std::string t = std::to_string(v);
    if constexpr (!std::is_integral_v<T>) {
      t.erase(t.find_last_not_of('0') + 1);
      if (!t.empty() && t.back() == '.') t.pop_back();
    }
    return t;
  };
  std::string want;
  if constexpr (std::is_integral_v<T>) {
    want = hi == std::numeric_limits<T>::max()
               ? "a whole number of at least " + std::to_string(lo) + " (at most " +
                     std::to_string(hi) + ")"
               : "a whole number from " + std::to_string(lo) + " to " + std::to_string(hi);
  } else {
    want = std::string("a number ") + (lo_open ? "above " : "of at least ") + number(lo);
    if (hi != std::numeric_limits<T>::max()) want += " and at most " + number(hi);
  }
  // --help shows the range compactly: ">= 1", "in [0, 65535]", "in (0, 1]".
  const std::string brief =
      hi == std::numeric_limits<T>::max()
          ? std::string(lo_open ? "> " : ">= ") + number(lo)
          : std::string("in ") + (lo_open ? "(" : "[") + number(lo) + ", " + number(hi) + "]";
  return CLI::Validator(
      [lo, hi, lo_open, want](std::string& input) -> std::string {
        bool ok = false;
        if constexpr (std::is_integral_v<T>) {
          T value{};
          const char* end = input.data() + input.size();
          const auto [ptr, ec] = std::from_chars(input.data(), end, value);
          ok = ec == std::errc() && ptr == end && value >= lo && value <= hi;
        } else {
          char* end = nullptr;
          const double value = std::strtod(input.c_str(), &end);
          ok = !input.empty() && end == input.c_str() + input.size() && std::isfinite(value) &&
               (lo_open ? value > lo : value >= lo) && value <= hi;
        }
        return ok ? std::string() : "must be " + want + ", got '" + input + "'";
      },
      brief);
}

// At least `lo` (integers) or at least / above `lo` (floating), up to T's largest value.
template <typename T>
CLI::Validator AtLeast(T lo) {
  return Between<T>(lo, std::numeric_limits<T>::max());
}
template <typename T>
CLI::Validator Above(T lo) {
  return Between<T>(lo, std::numeric_limits<T>::max(), /*lo_open=*/true);
}

}  // namespace moe::cli
