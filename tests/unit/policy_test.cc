// The scheduling policy as tables: state in, expected plan out (DESIGN.md section 4).
#include "scheduler/policy.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moe::sched {
namespace {

using testing::ElementsAre;
using testing::IsEmpty;

struct Item {
  int64_t id;
  int n;
  int blocks;
  bool sample;
  bool operator==(const PlanItem& p) const {
    return id == p.id && n == p.num_new_tokens && blocks == p.new_blocks && sample == p.sample;
  }
};

struct Case {
  std::string name;
  std::vector<SeqView> running;
  std::vector<SeqView> waiting;
  int free_blocks;
  PolicyConfig config;
  std::vector<Item> items;
  std::vector<int64_t> preempted;
  std::vector<int64_t> admitted;
};

// {id, num_tokens, num_computed, num_blocks}
SeqView S(int64_t id, int tokens, int computed, int blocks) {
  return {id, tokens, computed, blocks};
}

PolicyConfig Cfg(int budget, int max_seqs = 8, int block = 4) { return {budget, max_seqs, block}; }

std::vector<Case> Cases() {
  return {
      {"empty", {}, {}, 10, Cfg(16), {}, {}, {}},
      {"admit one prompt whole", {}, {S(1, 6, 0, 0)}, 10, Cfg(16), {{1, 6, 2, true}}, {}, {1}},
      {"decodes first, then FCFS prefill fills the budget (chunked)",
       {S(1, 9, 8, 2), S(2, 5, 4, 1)},
       {S(3, 10, 0, 0), S(4, 3, 0, 0)},
       10,
       Cfg(8),
       // 1: token 9 needs a 3rd block; 2: token 5 needs a 2nd; 3: a 6-token chunk of 10.
       {{1, 1, 1, true}, {2, 1, 1, true}, {3, 6, 2, false}},
       {},
       {3}},
      {"a prefill in progress continues as a running sequence",
       {S(3, 10, 6, 2)},
       {S(4, 3, 0, 0)},
       10,
       Cfg(8),
       {{3, 4, 1, true}, {4, 3, 1, true}},
       {},
       {4}},
      {"the sequence cap stops admission",
       {S(1, 5, 4, 1), S(2, 5, 4, 1)},
       {S(3, 2, 0, 0)},
       10,
       Cfg(16, /*max_seqs=*/2),
       {{1, 1, 1, true}, {2, 1, 1, true}},
       {},
       {}},
      {"FCFS: a head that does not fit blocks the queue",
       {},
       {S(1, 12, 0, 0), S(2, 2, 0, 0)},
       2,
       Cfg(16),
       {},
       {},
       {}},
      {"out of blocks: the most recent running sequence is preempted, nobody admitted",
       {S(1, 9, 8, 2), S(2, 9, 8, 2), S(3, 5, 4, 1)},
       {S(4, 2, 0, 0)},
       1,
       Cfg(16),
       // 1 takes the last free block; 2 needs one: 3 is preempted (frees 1).
       {{1, 1, 1, true}, {2, 1, 1, true}},
       {3},
       {}},
      {"the only running sequence that cannot grow preempts itself",
       {S(1, 9, 8, 2)},
       {S(2, 1, 0, 0)},
       0,
       Cfg(16),
       {},
       {1},
       {}},
      {"the most recent running sequence gives its blocks to an older one",
       {S(1, 5, 4, 1), S(2, 9, 8, 2)},
       {},
       0,
       Cfg(16),
       // 1 needs a block: 2 is preempted (frees 2). 1 goes on; 2 is gone.
       {{1, 1, 1, true}},
       {2},
       {}},
      {"the budget splits a long prompt over steps",
       {},
       {S(1, 40, 0, 0)},
       20,
       Cfg(16),
       {{1, 16, 4, false}},
       {},
       {1}},
      {"a preempted sequence re-enters with prompt and generated tokens",
       {},
       {S(7, 13, 0, 0)},
       4,
       Cfg(32),
       {{7, 13, 4, true}},
       {},
       {7}},
  };
}

class PolicyTest : public testing::TestWithParam<Case> {};

TEST_P(PolicyTest, PlansTheExpectedStep) {
  const Case& c = GetParam();
  StepPlan plan = Schedule(c.running, c.waiting, c.free_blocks, c.config);
  ASSERT_EQ(plan.items.size(), c.items.size());
  for (size_t i = 0; i < c.items.size(); ++i) {
    EXPECT_TRUE(c.items[i] == plan.items[i])
        << "item " << i << ": got id " << plan.items[i].id << " n " << plan.items[i].num_new_tokens
        << " blocks " << plan.items[i].new_blocks << " sample " << plan.items[i].sample;
  }
  EXPECT_EQ(plan.preempted, c.preempted);
  EXPECT_EQ(plan.admitted, c.admitted);
  EXPECT_LE(plan.num_tokens(), c.config.max_batched_tokens);
}

INSTANTIATE_TEST_SUITE_P(Table, PolicyTest, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<Case>& info) {
                           std::string n;
                           for (char ch : info.param.name) n += std::isalnum(ch) ? ch : '_';
                           return n;
                         });

// A whole run, step by step, with the pool and the sequences updated as the engine does:
// the plans never overcommit the pool and every sequence finishes.
TEST(PolicySimulationTest, EverySequenceFinishesWithinThePool) {
  const int block = 4, pool = 12;
  PolicyConfig cfg{10, 4, block};
  struct Sim {
    SeqView v;
    int target;  // num_tokens at which it finishes
  };
  std::vector<Sim> running, waiting;
  for (int i = 0; i < 9; ++i)
    waiting.push_back({S(i, 3 + (i * 5) % 11, 0, 0), 3 + (i * 5) % 11 + 6});
  int free_blocks = pool, finished = 0, preemptions = 0;
  for (int step = 0; step < 500 && finished < 9; ++step) {
    std::vector<SeqView> r, w;
    for (auto& s : running) r.push_back(s.v);
    for (auto& s : waiting) w.push_back(s.v);
    StepPlan plan = Schedule(r, w, free_blocks, cfg);
    for (int64_t id : plan.preempted) {
      auto it = std::find_if(running.begin(), running.end(), [&](auto& s) { return s.v.id == id; });
      ASSERT_NE(it, running.end());
      free_blocks += it->v.num_blocks;
      Sim back = *it;
      back.v.num_blocks = 0;
      back.v.num_computed = 0;
      running.erase(it);
      waiting.insert(waiting.begin(), back);
      ++preemptions;
    }
    for (int64_t id : plan.admitted) {
      auto it = std::find_if(waiting.begin(), waiting.end(), [&](auto& s) { return s.v.id == id; });
      ASSERT_NE(it, waiting.end());
      running.push_back(*it);
      waiting.erase(it);
    }
    for (const PlanItem& item : plan.items) {
      auto it =
          std::find_if(running.begin(), running.end(), [&](auto& s) { return s.v.id == item.id; });
      ASSERT_NE(it, running.end());
      free_blocks -= item.new_blocks;
      ASSERT_GE(free_blocks, 0) << "step " << step << " overcommits the pool";
      it->v.num_blocks += item.new_blocks;
      it->v.num_computed += item.num_new_tokens;
      ASSERT_LE(it->v.num_computed, it->v.num_blocks * block);
      if (item.sample) ++it->v.num_tokens;  // the sampled token
    }
    for (auto it = running.begin(); it != running.end();) {
      if (it->v.num_tokens >= it->target) {
        free_blocks += it->v.num_blocks;
        it = running.erase(it);
        ++finished;
      } else {
        ++it;
      }
    }
  }
  EXPECT_EQ(finished, 9);
  EXPECT_EQ(free_blocks, pool);
  EXPECT_GT(preemptions, 0) << "the pool is meant to be too small for all at once";
}

}  // namespace
}  // namespace moe::sched
