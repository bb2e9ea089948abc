// The scheduling policy as tables: state in, expected plan out (DESIGN.md section 4).
#include "scheduler/policy.h"

#include <algorithm>
#include <map>
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
  int rows = 1;
  bool operator==(const PlanItem& p) const {
    return id == p.id && n == p.num_new_tokens && blocks == p.new_blocks && sample == p.sample &&
           rows == p.rows;
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

// An SCMoE pair: two rows, `blocks` counting both rows' tables.
SeqView Pair(int64_t id, int tokens, int computed, int blocks) {
  return {id, tokens, computed, blocks, 2};
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
      {"an SCMoE pair's prompt costs two rows of budget and of blocks",
       {},
       {Pair(1, 6, 0, 0)},
       10,
       Cfg(16),
       {{1, 6, 4, true, 2}},
       {},
       {1}},
      {"a pair's prefill chunk is half the budget, in both rows",
       {},
       {Pair(1, 20, 0, 0), S(2, 3, 0, 0)},
       20,
       Cfg(16),
       {{1, 8, 4, false, 2}},
       {},
       {1}},
      {"a pair decodes one token in each row and grows both tables",
       {Pair(1, 9, 8, 4), S(2, 5, 4, 1)},
       {},
       3,
       Cfg(16),
       {{1, 1, 2, true, 2}, {2, 1, 1, true}},
       {},
       {}},
      {"a pair counts two rows against the sequence cap",
       {S(1, 5, 4, 1)},
       {Pair(2, 3, 0, 0), S(3, 2, 0, 0)},
       10,
       Cfg(16, /*max_seqs=*/2),
       {{1, 1, 1, true}},
       {},
       {}},
      {"a pair fits the sequence cap exactly",
       {S(1, 5, 4, 1)},
       {Pair(2, 3, 0, 0)},
       10,
       Cfg(16, /*max_seqs=*/3),
       {{1, 1, 1, true}, {2, 3, 2, true, 2}},
       {},
       {2}},
      {"preempting a pair frees both rows' blocks",
       {S(1, 9, 8, 2), Pair(2, 9, 8, 4)},
       {},
       0,
       Cfg(16),
       {{1, 1, 1, true}},
       {2},
       {}},
      {"a pair waits when the budget left is one row",
       {S(1, 5, 4, 1)},
       {Pair(2, 3, 0, 0), S(3, 2, 0, 0)},
       10,
       Cfg(2),
       {{1, 1, 1, true}},
       {},
       {}},
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

// A scripted run, step by step: the driver applies each plan as the engine does
// (preempted sequences lose their blocks and go to the head of the queue, admitted ones
// start running, sampled ones grow by a token, finished and cancelled ones return their
// blocks), and each step's plan and pool are compared with the table.
struct Event {
  int step;
  enum Kind { kArrive, kCancel } kind;
  SeqView seq;  // kArrive: the new sequence; kCancel: seq.id
};

struct ExpectedStep {
  std::string items;  // "id:n" for each plan item, '*' when it samples
  std::vector<int64_t> preempted;
  std::vector<int64_t> admitted;
  int free_after;  // free blocks after the step's allocations and releases
};

std::string Describe(const StepPlan& plan) {
  std::string out;
  for (const PlanItem& item : plan.items) {
    if (!out.empty()) out += ' ';
    out += std::to_string(item.id) + ':' + std::to_string(item.num_new_tokens) +
           (item.sample ? "*" : "");
  }
  return out;
}

TEST(PolicyStepTableTest, AdmissionChunkingPreemptionAndCancellation) {
  const PolicyConfig cfg{8, 3, 4};  // 8 tokens per step, 3 sequences, 4-token blocks
  const int pool = 5;
  // Each sequence finishes when it holds `target` tokens.
  std::map<int64_t, int> target = {{1, 12}, {2, 9}, {3, 7}, {4, 6}};
  const std::vector<Event> events = {
      {0, Event::kArrive, S(1, 10, 0, 0)}, {0, Event::kArrive, S(2, 3, 0, 0)},
      {1, Event::kArrive, S(3, 5, 0, 0)},  {3, Event::kCancel, S(2, 0, 0, 0)},
      {3, Event::kArrive, S(4, 4, 0, 0)},
  };
  const std::vector<ExpectedStep> table = {
      // 0: 1's 10-token prompt is chunked (8 of 10, 2 blocks); 2 waits for budget.
      {"1:8", {}, {1}, 3},
      // 1: 1 ends its prompt and samples (3rd block); 2 (3 tokens) and 3 (3 of 5) fill the
      // rest of the budget and the pool.
      {"1:2* 2:3* 3:3", {}, {2, 3}, 0},
      // 2: 1 and 2 decode in the blocks they hold; 3 needs a 2nd block and none is free:
      // 3, the most recently admitted, preempts itself and returns its block. 1 reaches
      // 12 tokens and finishes (3 blocks back).
      {"1:1* 2:1*", {3}, {}, 4},
      // 3: 2 is cancelled before the step (1 block back). 3 is back at the head of the
      // queue and recomputes its 5-token prompt; 4 arrives behind it and gets the last 3
      // tokens of the budget.
      {"3:5* 4:3", {}, {3, 4}, 2},
      // 4: both decode without new blocks; 3 reaches 7 tokens and finishes.
      {"3:1* 4:1*", {}, {}, 4},
  };

  std::vector<SeqView> running, waiting;
  int free_blocks = pool;
  auto find = [](std::vector<SeqView>& v, int64_t id) {
    return std::find_if(v.begin(), v.end(), [&](const SeqView& s) { return s.id == id; });
  };
  for (size_t step = 0; step < table.size(); ++step) {
    for (const Event& e : events) {
      if (e.step != static_cast<int>(step)) continue;
      if (e.kind == Event::kArrive) {
        waiting.push_back(e.seq);
        continue;
      }
      if (auto it = find(running, e.seq.id); it != running.end()) {
        free_blocks += it->num_blocks;
        running.erase(it);
      } else if (auto w = find(waiting, e.seq.id); w != waiting.end()) {
        free_blocks += w->num_blocks;
        waiting.erase(w);
      }
    }
    const StepPlan plan = Schedule(running, waiting, free_blocks, cfg);
    const ExpectedStep& want = table[step];
    EXPECT_EQ(Describe(plan), want.items) << "step " << step;
    EXPECT_EQ(plan.preempted, want.preempted) << "step " << step;
    EXPECT_EQ(plan.admitted, want.admitted) << "step " << step;
    for (int64_t id : plan.preempted) {
      auto it = find(running, id);
      free_blocks += it->num_blocks;
      SeqView back = *it;
      back.num_blocks = 0;
      back.num_computed = 0;
      running.erase(it);
      waiting.insert(waiting.begin(), back);
    }
    for (int64_t id : plan.admitted) {
      auto it = find(waiting, id);
      running.push_back(*it);
      waiting.erase(it);
    }
    for (const PlanItem& item : plan.items) {
      auto it = find(running, item.id);
      free_blocks -= item.new_blocks;
      it->num_blocks += item.new_blocks;
      it->num_computed += item.num_new_tokens;
      if (item.sample) ++it->num_tokens;
    }
    for (auto it = running.begin(); it != running.end();) {
      if (it->num_tokens >= target[it->id]) {
        free_blocks += it->num_blocks;
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    EXPECT_EQ(free_blocks, want.free_after) << "step " << step;
  }
}

}  // namespace
}  // namespace moe::sched
