#include "engine/offload_ring.h"

#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OffloadRing>> OffloadRing::Create(Backend& backend,
                                                                 OffloadRingOptions options) {
  if (options.slots < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("offload ring: ", options.slots, " slots; the ring needs at least 2"));
  }
  if (options.slot_bytes == 0) return absl::InvalidArgumentError("offload ring: 0-byte slots");
  if (backend.compute_memory() == MemoryKind::kDevice) {
    return absl::UnimplementedError(
        "offload ring: the copy-thread engine runs on a host-memory backend; a device "
        "backend's engine is a copy stream");
  }
  std::unique_ptr<OffloadRing> ring(new OffloadRing(std::move(options)));
  ring->slots_.resize(ring->options_.slots);
  for (Slot& slot : ring->slots_) {
    absl::StatusOr<Buffer> memory =
        backend.Allocate(backend.compute_memory(), ring->options_.slot_bytes);
    if (!memory.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat("offload ring: slot of ",
                                                       ring->options_.slot_bytes,
                                                       " bytes: ", memory.status().message()));
    }
    slot.memory = *std::move(memory);
  }
  ring->copier_ = std::thread([r = ring.get()] { r->CopyLoop(); });
  return ring;
}

OffloadRing::~OffloadRing() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  if (copier_.joinable()) copier_.join();
}

absl::StatusOr<int64_t> OffloadRing::Load(std::vector<CopyRegion> regions) {
  for (const CopyRegion& r : regions) {
    if (r.bytes > 0 && r.src == nullptr) {
      return absl::InvalidArgumentError("offload ring: a region without a source");
    }
    if (r.offset > options_.slot_bytes || r.bytes > options_.slot_bytes - r.offset) {
      return absl::InvalidArgumentError(absl::StrCat("offload ring: region [", r.offset, ", ",
                                                     r.offset + r.bytes, ") outside a slot of ",
                                                     options_.slot_bytes, " bytes"));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t ticket = next_ticket_;
  Slot& slot = slots_[ticket % slots()];
  if (slot.state != State::kFree) {
    return absl::FailedPreconditionError(
        absl::StrCat("offload ring: slot ", ticket % slots(), " still holds ticket ", slot.ticket,
                     " (not released): at most ", slots(), " sections may be outstanding"));
  }
  slot.state = State::kLoading;
  slot.ticket = ticket;
  ++next_ticket_;
  queue_.push_back({ticket, std::move(regions)});
  work_.notify_one();
  return ticket;
}

void OffloadRing::CopyLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to copy
    Job job = std::move(queue_.front());
    queue_.pop_front();
    std::byte* dst = slots_[job.ticket % slots()].memory.as<std::byte>();
    lock.unlock();
    // The slot is kLoading and only this thread writes it until it is kReady.
    if (options_.before_copy) options_.before_copy(job.ticket);
    const auto start = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (const CopyRegion& r : job.regions) {
      if (r.bytes > 0) std::memcpy(dst + r.offset, r.src, r.bytes);
      bytes += r.bytes;
    }
    const double seconds = Since(start);
    lock.lock();
    slots_[job.ticket % slots()].state = State::kReady;
    stats_.bytes_copied += static_cast<int64_t>(bytes);
    stats_.copy_seconds += seconds;
    ++stats_.loads;
    copied_.notify_all();
  }
}

absl::Status OffloadRing::CheckTicket(int64_t ticket) const {
  if (ticket < 0 || ticket >= next_ticket_ || slots_[ticket % slots()].ticket != ticket ||
      slots_[ticket % slots()].state == State::kFree) {
    return absl::InvalidArgumentError(
        absl::StrCat("offload ring: ticket ", ticket, " is not loaded (or already released)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const std::byte*> OffloadRing::Wait(int64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  if (absl::Status s = CheckTicket(ticket); !s.ok()) return s;
  Slot& slot = slots_[ticket % slots()];
  if (slot.state != State::kReady) {
    const auto start = std::chrono::steady_clock::now();
    copied_.wait(lock, [&] { return slot.state == State::kReady; });
    stats_.stall_seconds += Since(start);
  }
  return static_cast<const std::byte*>(slot.memory.data());
}

absl::Status OffloadRing::Release(int64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  if (absl::Status s = CheckTicket(ticket); !s.ok()) return s;
  Slot& slot = slots_[ticket % slots()];
  // Releasing a slot still being copied would let a later Load reuse it mid-copy: wait.
  copied_.wait(lock, [&] { return slot.state == State::kReady; });
  slot.state = State::kFree;
  return absl::OkStatus();
}

OffloadRingStats OffloadRing::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace moe
