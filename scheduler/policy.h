// Iteration-level scheduling policy (DESIGN.md section 4), as a pure function of the
// state, so it is tested with tables of expected plans and no model.
//
// Each step: running sequences first, in admission order, each as many of its
// uncomputed tokens as the token budget allows (one for a decode, a chunk for a prefill
// in progress); when the KV pool cannot hold a running sequence's next tokens, the most
// recently admitted running sequence is preempted (its blocks freed, recomputed later)
// until it can. Then, if nothing was preempted, waiting sequences FCFS, each as a
// prefill chunk that fills the remaining budget, while the sequence cap and the pool
// allow; the queue is never overtaken.
//
// An SCMoE pair (DESIGN.md section 6) is one SeqView of 2 rows: its strong and weak
// sequences share their tokens, so they are admitted, chunked and preempted together,
// and each of their new tokens costs 2 of the token budget, 2 of the sequence cap and
// a block slot in each row's table.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::sched {

struct SeqView {
  int64_t id = 0;
  int num_tokens = 0;    // prompt + generated so far
  int num_computed = 0;  // tokens already in the KV cache
  int num_blocks = 0;    // KV blocks it holds, every row's together
  int rows = 1;          // 2 for an SCMoE pair: rows of the flat batch per token
};

struct PolicyConfig {
  int max_batched_tokens = 512;  // token budget of one step
  int max_seqs = 64;             // running sequences at most
  int block_size = 16;
};

struct PlanItem {
  int64_t id = 0;
  int num_new_tokens = 0;  // tokens computed this step: [num_computed, + num_new_tokens)
  int new_blocks = 0;      // blocks to allocate before the step, every row's together
  bool sample = false;     // the chunk reaches num_tokens: sample the next token
  int rows = 1;            // the SeqView's rows: the step computes rows * num_new_tokens
};

struct StepPlan {
  std::vector<PlanItem> items;     // running first (admission order), then admitted
  std::vector<int64_t> preempted;  // running sequences to preempt, most recent first
  std::vector<int64_t> admitted;   // waiting sequences that start running, FCFS
  int num_tokens() const;          // rows of the flat batch: each item's rows * num_new_tokens
};

// Blocks needed to hold `num_tokens` token slots.
int BlocksFor(int num_tokens, int block_size);

// `running` in admission order (oldest first), `waiting` in queue order (head first).
StepPlan Schedule(const std::vector<SeqView>& running, const std::vector<SeqView>& waiting,
                  int free_blocks, const PolicyConfig& config);

}  // namespace moe::sched
