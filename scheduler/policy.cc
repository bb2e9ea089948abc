#include "scheduler/policy.h"

#include <algorithm>

namespace moe::sched {

int StepPlan::num_tokens() const {
  int n = 0;
  for (const PlanItem& item : items) n += item.rows * item.num_new_tokens;
  return n;
}

int BlocksFor(int num_tokens, int block_size) { return (num_tokens + block_size - 1) / block_size; }

namespace {

// The blocks a sequence's rows need to grow to `num_tokens` positions each.
int NewBlocks(const SeqView& s, int num_tokens, int block_size) {
  return s.rows * std::max(0, BlocksFor(num_tokens, block_size) - s.num_blocks / s.rows);
}

}  // namespace

StepPlan Schedule(const std::vector<SeqView>& running, const std::vector<SeqView>& waiting,
                  int free_blocks, const PolicyConfig& config) {
  StepPlan plan;
  int budget = config.max_batched_tokens;
  // Running sequences, oldest first; victims are taken from the back (most recent).
  int last = static_cast<int>(running.size()) - 1;  // last running sequence not preempted
  for (int i = 0; i <= last && budget > 0; ++i) {
    const SeqView& s = running[i];
    const int n = std::min(s.num_tokens - s.num_computed, budget / s.rows);
    if (n <= 0) continue;
    const int need = NewBlocks(s, s.num_computed + n, config.block_size);
    bool self_preempted = false;
    while (need > free_blocks) {
      const SeqView& victim = running[last];
      plan.preempted.push_back(victim.id);
      free_blocks += victim.num_blocks;
      --last;
      if (last < i) {  // the victim was this sequence itself
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;
    free_blocks -= need;
    budget -= n * s.rows;
    plan.items.push_back({s.id, n, need, s.num_computed + n == s.num_tokens, s.rows});
  }
  if (!plan.preempted.empty()) return plan;  // memory is short: admit nobody this step

  int num_running = 0;  // rows
  for (int i = 0; i <= last; ++i) num_running += running[i].rows;
  for (const SeqView& s : waiting) {
    if (num_running + s.rows > config.max_seqs) break;
    const int n = std::min(s.num_tokens - s.num_computed, budget / s.rows);
    if (n <= 0) break;
    const int need = NewBlocks(s, s.num_computed + n, config.block_size);
    if (need > free_blocks) break;  // FCFS: nobody overtakes the head of the queue
    free_blocks -= need;
    budget -= n * s.rows;
    num_running += s.rows;
    plan.admitted.push_back(s.id);
    plan.items.push_back({s.id, n, need, s.num_computed + n == s.num_tokens, s.rows});
  }
  return plan;
}

}  // namespace moe::sched
