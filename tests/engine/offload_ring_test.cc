// The section ring's slots and copy thread (engine/offload_ring.h) under injected delays in
// the copies and in the compute that reads them: every section read is the one loaded,
// complete, and unchanged until it is released, while later sections are copied into the
// other slots. Run under ThreadSanitizer too (the tsan build of tests/tsan.supp).
#include "engine/offload_ring.h"

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/cpu_backend.h"

namespace moe {
namespace {

using std::chrono::microseconds;

// Section t: `bytes` bytes of a pattern of t, in `pieces` regions at scattered offsets.
struct Section {
  std::vector<uint8_t> data;
  std::vector<CopyRegion> regions;
};

Section MakeSection(int64_t t, size_t slot_bytes, std::mt19937& rng) {
  Section s;
  const size_t bytes = slot_bytes / 2 + rng() % (slot_bytes / 2);
  s.data.resize(bytes);
  for (size_t i = 0; i < bytes; ++i) s.data[i] = static_cast<uint8_t>(t * 31 + i * 7);
  // Three pieces written to the slot in reverse order of their offsets.
  const size_t a = bytes / 3, b = 2 * bytes / 3;
  s.regions = {
      {s.data.data() + b, b, bytes - b}, {s.data.data() + a, a, b - a}, {s.data.data(), 0, a}};
  return s;
}

bool SlotHolds(const std::byte* slot, const Section& s) {
  return std::memcmp(slot, s.data.data(), s.data.size()) == 0;
}

class OffloadRingTest : public testing::TestWithParam<int> {};  // slots

TEST_P(OffloadRingTest, SectionsArriveWholeAndStayUntilReleasedUnderDelays) {
  const int R = GetParam();
  const size_t slot_bytes = 64 << 10;
  CpuBackend backend;
  std::mt19937 delays(R);
  std::mutex delays_mu;
  OffloadRingOptions options;
  options.slots = R;
  options.slot_bytes = slot_bytes;
  options.before_copy = [&](int64_t) {
    int us;
    {
      std::lock_guard<std::mutex> lock(delays_mu);
      us = static_cast<int>(delays() % 300);
    }
    std::this_thread::sleep_for(microseconds(us));
  };
  auto ring = OffloadRing::Create(backend, options);
  ASSERT_TRUE(ring.ok()) << ring.status();

  // A pipeline as the streaming source will run it: keep R - 1 sections loading ahead
  // of the one being computed.
  constexpr int kSections = 120;
  std::mt19937 rng(7);
  std::vector<Section> sections;
  for (int t = 0; t < kSections; ++t) sections.push_back(MakeSection(t, slot_bytes, rng));
  std::vector<int64_t> tickets;
  int next = 0;
  auto load = [&] {
    auto ticket = (*ring)->Load(sections[next].regions);
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    EXPECT_EQ(*ticket, next);
    tickets.push_back(*ticket);
    ++next;
  };
  for (int i = 0; i < R - 1; ++i) load();
  for (int t = 0; t < kSections; ++t) {
    if (next < kSections) load();
    auto slot = (*ring)->Wait(tickets[t]);
    ASSERT_TRUE(slot.ok()) << slot.status();
    EXPECT_TRUE(SlotHolds(*slot, sections[t])) << "section " << t << " read before complete";
    std::this_thread::sleep_for(microseconds(rng() % 300));  // compute, while others copy
    EXPECT_TRUE(SlotHolds(*slot, sections[t])) << "section " << t << " overwritten while read";
    ASSERT_TRUE((*ring)->Release(tickets[t]).ok());
  }
  const OffloadRingStats stats = (*ring)->stats();
  EXPECT_EQ(stats.loads, kSections);
  size_t total = 0;
  for (const Section& s : sections) total += s.data.size();
  EXPECT_EQ(stats.bytes_copied, static_cast<int64_t>(total));
  EXPECT_GT(stats.copy_seconds, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Slots, OffloadRingTest, testing::Values(2, 3, 5));

TEST(OffloadRingRulesTest, AHeldSlotIsNotOverwrittenAndTicketsAreChecked) {
  CpuBackend backend;
  OffloadRingOptions options;
  options.slots = 2;
  options.slot_bytes = 1024;
  auto ring = OffloadRing::Create(backend, options);
  ASSERT_TRUE(ring.ok());
  std::vector<uint8_t> a(1024, 1), b(1024, 2), c(1024, 3);
  auto t0 = (*ring)->Load({{a.data(), 0, a.size()}});
  auto t1 = (*ring)->Load({{b.data(), 0, b.size()}});
  ASSERT_TRUE(t0.ok() && t1.ok());
  // Slot 0 still holds ticket 0: a third section may not overwrite it.
  auto t2 = (*ring)->Load({{c.data(), 0, c.size()}});
  EXPECT_EQ(t2.status().code(), absl::StatusCode::kFailedPrecondition) << t2.status();
  auto s0 = (*ring)->Wait(*t0);
  ASSERT_TRUE(s0.ok());
  EXPECT_EQ(static_cast<uint8_t>((*s0)[1023]), 1);
  ASSERT_TRUE((*ring)->Release(*t0).ok());
  EXPECT_FALSE((*ring)->Release(*t0).ok()) << "released twice";
  EXPECT_FALSE((*ring)->Wait(*t0).ok()) << "waited after release";
  EXPECT_FALSE((*ring)->Wait(7).ok()) << "never loaded";
  t2 = (*ring)->Load({{c.data(), 0, c.size()}});
  ASSERT_TRUE(t2.ok()) << t2.status();
  auto s2 = (*ring)->Wait(*t2);
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(static_cast<uint8_t>((*s2)[0]), 3);
  auto s1 = (*ring)->Wait(*t1);
  ASSERT_TRUE(s1.ok());
  EXPECT_EQ(static_cast<uint8_t>((*s1)[0]), 2) << "loading slot 0 again left slot 1 alone";
  // Regions outside the slot, or without a source, are refused before anything is queued.
  EXPECT_FALSE((*ring)->Load({{a.data(), 1000, 100}}).ok());
  EXPECT_FALSE((*ring)->Load({{nullptr, 0, 8}}).ok());
}

TEST(OffloadRingRulesTest, RefusesFewerThanTwoSlotsOrEmptySlots) {
  CpuBackend backend;
  OffloadRingOptions options;
  options.slots = 1;
  options.slot_bytes = 64;
  EXPECT_EQ(OffloadRing::Create(backend, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.slots = 2;
  options.slot_bytes = 0;
  EXPECT_EQ(OffloadRing::Create(backend, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The time a step blocks for a copy that has not completed is counted as stall.
TEST(OffloadRingRulesTest, WaitingForASlowCopyCountsAsStall) {
  CpuBackend backend;
  OffloadRingOptions options;
  options.slots = 2;
  options.slot_bytes = 256;
  options.before_copy = [](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
  auto ring = OffloadRing::Create(backend, options);
  ASSERT_TRUE(ring.ok());
  std::vector<uint8_t> a(256, 9);
  auto t = (*ring)->Load({{a.data(), 0, a.size()}});
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*ring)->Wait(*t).ok());
  EXPECT_GE((*ring)->stats().stall_seconds, 0.010);
  ASSERT_TRUE((*ring)->Release(*t).ok());
}

}  // namespace
}  // namespace moe
