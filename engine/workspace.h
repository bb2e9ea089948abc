// Step scratch buffers, allocated through a Backend in its compute memory and grown on
// demand (by half again, so a growing batch reallocates rarely). Slots are small integers
// the user names; a slot's contents are lost when it grows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/backend.h"

namespace moe {

class Workspace {
 public:
  explicit Workspace(Backend* backend) : backend_(backend) {}

  template <typename T>
  absl::StatusOr<T*> Get(int slot, size_t count) {
    if (slot >= static_cast<int>(slots_.size())) slots_.resize(slot + 1);
    Buffer& b = slots_[slot];
    const size_t bytes = count * sizeof(T);
    if (b.bytes() < bytes) {
      b = Buffer();
      absl::StatusOr<Buffer> grown =
          backend_->Allocate(backend_->compute_memory(), bytes + bytes / 2 + 64);
      if (!grown.ok()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("step workspace: ", grown.status().message()));
      }
      b = *std::move(grown);
      ++generation_;
    }
    return b.as<T>();
  }
  // Counts the growths: a recorded op graph that reads a slot is stale once it changes.
  uint64_t generation() const { return generation_; }

 private:
  Backend* backend_;
  std::vector<Buffer> slots_;
  uint64_t generation_ = 0;
};

}  // namespace moe
