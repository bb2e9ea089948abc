// One step's work (DESIGN.md section 2.3): a flat batch of the tokens of several
// sequences, prefill chunks and decode tokens alike. Each sequence's new tokens are
// contiguous and in position order.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

// How a sequence's tokens are routed in every MoE layer, when not by the model's own rule
// (DESIGN.md section 6; specs 1.1 and 4.1). At most one of the three is meant to be set;
// where more are, weak_rank wins, then top_k.
struct RoutingOverride {
  int32_t weak_rank = 0;  // r >= 1: SCMoE weak routing, only the r-th ranked expert
  int32_t top_k = 0;      // n >= 1: the n most probable experts instead of the model's k
  float top_p = 0.f;      // P in (0, 1]: the smallest prefix whose mass exceeds P

  bool any() const { return weak_rank != 0 || top_k != 0 || top_p != 0.f; }
  // Experts a token may use under it: the slots the MoE layer must leave room for.
  int max_experts(int model_top_k, int num_experts) const {
    if (weak_rank > 0) return 1;
    if (top_k > 0) return top_k;
    if (top_p > 0.f) return num_experts;
    return model_top_k;
  }
};

struct BatchSequence {
  const int32_t* block_table = nullptr;  // blocks covering [0, start_pos + num_tokens)
  int32_t start_pos = 0;                 // tokens of this sequence already in the KV cache
  int32_t num_tokens = 0;                // new tokens in this step
  int32_t first_token = 0;               // index of its first new token in the flat batch
  bool sample = false;                   // produce logits at its last new token
  // Its row is only argmaxed (greedy decoding): when every sampled sequence of a step says
  // so, the step returns ForwardOutput::tokens and no logits.
  bool greedy = false;
  // Or its token is drawn on the backend (kernels::SampleParams) with these parameters and
  // this uniform draw in [0, 1) from its random stream. When every sampled sequence is
  // greedy or drawn on the backend, the step returns ForwardOutput::tokens and no logits.
  struct BackendSample {
    bool on = false;
    float temperature = 1.f;
    int32_t top_k = 0;
    float top_p = 1.f;
    float uniform = 0.f;
  } backend_sample;
  // SCMoE on the backend: this (strong) sequence's sampled row becomes the self-contrast
  // scores of it and the next sequence's row (its weak pass, also sampled) before the
  // draw (kernels::SelfContrastRowsParams; the weak row's own pick is meaningless).
  struct BackendContrast {
    bool on = false;
    float temperature = 0.f;  // the request's; <= 0 (greedy) scales by 1
    float alpha = 0.1f;
    float beta = 0.5f;
    bool ban_eos = false;
  } backend_contrast;
  RoutingOverride routing;  // none: the model's own routing
};

struct Batch {
  std::vector<int32_t> token_ids;   // [T]
  std::vector<int32_t> positions;   // [T]
  std::vector<int32_t> token_seq;   // [T] index into seqs
  std::vector<BatchSequence> seqs;  // [S]
  // Logits for every token instead of only the sampled ones (teacher-forced scoring).
  bool all_logits = false;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }

  // Appends `tokens` of a sequence that already has `start_pos` tokens cached.
  void AddSequence(std::span<const int32_t> tokens, int32_t start_pos, const int32_t* block_table,
                   bool sample, RoutingOverride routing = {}) {
    BatchSequence s;
    s.block_table = block_table;
    s.start_pos = start_pos;
    s.num_tokens = static_cast<int32_t>(tokens.size());
    s.first_token = num_tokens();
    s.sample = sample;
    s.routing = routing;
    const int32_t index = static_cast<int32_t>(seqs.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      token_ids.push_back(tokens[i]);
      positions.push_back(start_pos + static_cast<int32_t>(i));
      token_seq.push_back(index);
    }
    seqs.push_back(s);
  }
};

struct ForwardOutput {
  // [R, V]: one row per sequence with sample=true, in sequence order (or per token when
  // Batch::all_logits).
  // Empty when every sampled sequence was greedy (then `tokens` has their picks).
  std::vector<float> logits;
  std::vector<int32_t> rows_seq;  // [R] sequence of each logits row
  // [R] each row's token picked on the backend (the argmax of a greedy row, the lowest id
  // among equal maxima; a backend draw otherwise), when every sampled sequence was greedy
  // or drawn on the backend and not Batch::all_logits; else empty.
  std::vector<int32_t> tokens;
  // [num_layers, E] tokens routed to each expert in this step (zeros for dense layers).
  std::vector<int32_t> expert_tokens;
  // [E + 1]: (token, MoE layer) pairs of this step that used n experts, at index n.
  std::vector<int64_t> experts_per_token;
  // What the step touched, for rooflines and metrics: weight bytes read (each expert with
  // rows counted once, however many rows it had), KV cache bytes read by attention, and
  // floating-point operations (2 per multiply-add; attention included).
  int64_t weight_bytes = 0;
  int64_t kv_bytes = 0;
  int64_t flops = 0;
};

}  // namespace moe
