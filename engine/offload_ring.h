// The SE-MoE section ring's slots and copy engine (DESIGN.md section 5; issue 13): R
// slots of one section each in the backend's compute memory, filled from host copies by a
// copy thread, in ticket order. A ticket is one section load: Load queues it into slot
// ticket % R, Wait blocks until its copy has completed (the time blocked is the compute
// stall), Release says the step no longer reads it. Two rules hold by construction:
//  - a step never reads a slot before its copy has completed (Wait returns only then);
//  - no copy overwrites a slot a step still reads (Load refuses a slot whose previous
//    ticket is not released, rather than block the thread that would release it).
// This is the CPU backend's engine (a copy thread into a bounded arena in host memory),
// and the first piece of the ring: the streaming ExpertSource comes next.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moe {

// One piece of a section: `bytes` from `src` (host memory) to `offset` in the slot.
struct CopyRegion {
  const void* src = nullptr;
  size_t offset = 0;
  size_t bytes = 0;
};

struct OffloadRingOptions {
  int slots = 2;          // R >= 2
  size_t slot_bytes = 0;  // the largest section
  // Test hooks: called on the copy thread before each ticket's copy (to delay it).
  std::function<void(int64_t ticket)> before_copy;
};

struct OffloadRingStats {
  int64_t bytes_copied = 0;
  double copy_seconds = 0;   // the copy thread's time copying
  double stall_seconds = 0;  // callers' time blocked in Wait
  int64_t loads = 0;
};

class OffloadRing {
 public:
  // The slots in `backend`'s compute memory. InvalidArgument for fewer than 2 slots or a
  // slot of 0 bytes; the allocation's error when they do not fit. The CPU backend only
  // (a device backend's engine is a copy stream with events).
  static absl::StatusOr<std::unique_ptr<OffloadRing>> Create(Backend& backend,
                                                             OffloadRingOptions options);
  ~OffloadRing();  // finishes the queued copies, then stops the copy thread
  OffloadRing(const OffloadRing&) = delete;
  OffloadRing& operator=(const OffloadRing&) = delete;

  int slots() const { return static_cast<int>(slots_.size()); }
  size_t slot_bytes() const { return options_.slot_bytes; }

  // Queues the next ticket's copy of `regions` into slot ticket % R and returns the
  // ticket. FailedPrecondition if that slot's previous ticket is not released yet;
  // InvalidArgument for a region outside the slot or without a source.
  absl::StatusOr<int64_t> Load(std::vector<CopyRegion> regions);
  // The slot of `ticket` once its copy has completed (blocking until then).
  // InvalidArgument for a ticket not loaded or already released.
  absl::StatusOr<const std::byte*> Wait(int64_t ticket);
  // The step is done with the ticket's slot. InvalidArgument as for Wait.
  absl::Status Release(int64_t ticket);

  OffloadRingStats stats() const;

 private:
  enum class State { kFree, kLoading, kReady };
  struct Slot {
    Buffer memory;
    State state = State::kFree;
    int64_t ticket = -1;  // the ticket it holds or last held
  };
  struct Job {
    int64_t ticket;
    std::vector<CopyRegion> regions;
  };

  explicit OffloadRing(OffloadRingOptions options) : options_(std::move(options)) {}
  void CopyLoop();
  absl::Status CheckTicket(int64_t ticket) const;  // with mu_ held

  OffloadRingOptions options_;
  std::vector<Slot> slots_;
  mutable std::mutex mu_;
  std::condition_variable work_;    // a job was queued, or stopping
  std::condition_variable copied_;  // a copy completed
  std::deque<Job> queue_;
  int64_t next_ticket_ = 0;
  bool stopping_ = false;
  OffloadRingStats stats_;
  std::thread copier_;
};

}  // namespace moe
