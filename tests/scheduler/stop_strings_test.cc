#include "scheduler/stop_strings.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace moe::sched {
namespace {

// Feeds `pieces` and returns the emitted text and the match.
std::pair<std::string, std::string> Feed(std::vector<std::string> stops,
                                         const std::vector<std::string>& pieces) {
  StopStringMatcher m(std::move(stops));
  std::string out, matched;
  for (const std::string& p : pieces) {
    auto r = m.Push(p);
    out += r.text;
    if (r.matched) {
      matched = *r.matched;
      break;
    }
  }
  if (matched.empty()) out += m.Flush();
  return {out, matched};
}

TEST(StopStringsTest, NoStopsPassesEverythingThrough) {
  EXPECT_EQ(Feed({}, {"a", "b", "c"}).first, "abc");
}

TEST(StopStringsTest, StopsBeforeAMatchSpanningPieces) {
  auto [text, matched] = Feed({"\n\n"}, {"Hello", "\n", "\nworld"});
  EXPECT_EQ(text, "Hello");
  EXPECT_EQ(matched, "\n\n");
}

TEST(StopStringsTest, HoldsBackAPossiblePrefixAndReleasesItWhenItDiverges) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Push("abc E").text, "abc ");
  EXPECT_EQ(m.Push("N").text, "");
  auto r = m.Push("x");
  EXPECT_EQ(r.text, "ENx");
  EXPECT_FALSE(r.matched);
}

TEST(StopStringsTest, EarliestMatchWinsAmongSeveral) {
  auto [text, matched] = Feed({"world", "lo w"}, {"hello world"});
  EXPECT_EQ(text, "hel");
  EXPECT_EQ(matched, "lo w");
}

TEST(StopStringsTest, FlushReturnsTheHeldTailWhenGenerationEnds) {
  auto [text, matched] = Feed({"STOP"}, {"go ST"});
  EXPECT_EQ(text, "go ST");
  EXPECT_EQ(matched, "");
}

TEST(StopStringsTest, NothingAfterAMatch) {
  StopStringMatcher m({"x"});
  EXPECT_TRUE(m.Push("axb").matched);
  EXPECT_EQ(m.Push("more").text, "");
  EXPECT_EQ(m.Flush(), "");
}

}  // namespace
}  // namespace moe::sched
