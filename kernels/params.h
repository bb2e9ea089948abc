// The parameters of every op of the forward pass, one definition shared by the CPU
// kernels (kernels/cpu) and the CUDA kernels (kernels/cuda). Plain structs of pointers and
// sizes: on the CPU every pointer is host memory, on CUDA device memory unless a comment
// says host. Each backend checks a Params with its own CanImplement before it runs it.
// Glossary (STYLE.md item 10): T tokens, H hidden, I expert intermediate, E experts,
// K top-k, P = T*K (token, slot) pairs, S sequences, B KV block size, D head dim,
// V vocabulary.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe::kernels {

// The element type of a weight. Activations, norms and the KV cache are fp32.
enum class DType : uint8_t {
  kF32,
  kBF16,  // bfloat16: the top 16 bits of an IEEE fp32; widened exactly
};

inline constexpr size_t DTypeBytes(DType d) { return d == DType::kBF16 ? 2 : 4; }
inline constexpr const char* DTypeName(DType d) {
  return d == DType::kBF16 ? "bfloat16" : "float32";
}

// How a weight matrix W[N, K] (PyTorch nn.Linear layout: N outputs, K inputs) is laid out
// in memory.
enum class WeightLayout : uint8_t {
  // [N, K], row n contiguous: the checkpoint's layout, and what cuBLAS reads.
  kRowMajor,
  // The CPU GEMM's packed layout: panels of kPanelWidth output rows, panel p holding rows
  // [16p, 16p + 16) (the last panel padded with zero rows). Inside a panel, f32 is
  // [K][16]; bf16 is [ceil(K/2)][16][2], the two k of a pair adjacent (a zero pads an odd
  // K), so one 64-byte load widens into the 16 columns of k and of k + 1.
  kPanels16,
};

inline constexpr int kPanelWidth = 16;

// A weight matrix as the Linear op reads it: y[M, N] = x[M, K] * W[N, K]^T.
struct MatrixRef {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  WeightLayout layout = WeightLayout::kRowMajor;
  int64_t rows = 0;  // N
  int64_t cols = 0;  // K
};

// Bytes of the matrix's storage in its layout (panel padding included).
inline constexpr size_t MatrixBytes(DType dtype, WeightLayout layout, int64_t rows, int64_t cols) {
  if (layout == WeightLayout::kRowMajor)
    return static_cast<size_t>(rows * cols) * DTypeBytes(dtype);
  const int64_t panels = (rows + kPanelWidth - 1) / kPanelWidth;
  const int64_t k = dtype == DType::kBF16 ? (cols + 1) / 2 * 2 : cols;
  return static_cast<size_t>(panels * k * kPanelWidth) * DTypeBytes(dtype);
}
inline size_t MatrixBytes(const MatrixRef& w) {
  return MatrixBytes(w.dtype, w.layout, w.rows, w.cols);
}

// ------------------------------------------------------------------------------ dense ops

// y[r, :] = x[row(r), :] * W^T (+ bias) for r in [0, m), row(r) = x_rows ? x_rows[r] : r.
struct LinearParams {
  const float* x = nullptr;         // [*, ldx] fp32 rows of K inputs
  int64_t ldx = 0;                  // elements between rows of x (>= K)
  const int32_t* x_rows = nullptr;  // [m] optional row indirection (a gather without a copy)
  int m = 0;                        // rows of output
  MatrixRef w;                      // [N, K]
  const float* bias = nullptr;      // [N] or nullptr
  float* y = nullptr;               // [m, ldy] out (overwritten)
  int64_t ldy = 0;                  // elements between rows of y (>= N)
};

// out[t, :] = table[ids[t], :] as fp32.
struct EmbeddingParams {
  MatrixRef table;               // [V, H]; the tied LM head's packed matrix works as well
  const int32_t* ids = nullptr;  // [T], each in [0, V)
  int num_tokens = 0;            // T
  float* out = nullptr;          // [T, H] out
};

// y[r, :] = x[row(r), :] / sqrt(mean(x[row(r), :]^2) + eps) * weight, per row, with
// row(r) = x_rows ? x_rows[r] : r (in place allowed without x_rows).
struct RmsNormParams {
  const float* x = nullptr;       // [*, n]
  const float* weight = nullptr;  // [n]
  int rows = 0;
  int n = 0;
  float eps = 1e-6f;
  float* y = nullptr;               // [rows, n] out
  const int32_t* x_rows = nullptr;  // [rows] optional row indirection
};

// Rotary embedding in the "rotate_half" (GPT-NeoX) layout that Hugging Face Llama-family
// models use: pairs (i, i + rotary_dim/2), inv_freq[i] = 1 / theta^(2i / rotary_dim).
struct RopeParams {
  float* x = nullptr;                  // [T, num_heads, head_dim], rotated in place
  const int32_t* positions = nullptr;  // [T]
  int num_tokens = 0;                  // T
  int num_heads = 0;
  int head_dim = 0;       // D, even
  int rotary_dim = 0;     // leading dims rotated; D for full rotary
  float theta = 10000.f;  // rope_theta
};

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i], silu(g) = g / (1 + exp(-g)).
struct SiluMulParams {
  const float* gate_up = nullptr;  // [rows, 2 * inter]
  int rows = 0;
  int inter = 0;         // I
  float* out = nullptr;  // [rows, inter] out
};

// x[i] += y[i].
struct AddParams {
  float* x = nullptr;
  const float* y = nullptr;
  int64_t n = 0;
};

// x[r, :] += sigmoid(gate[r]) * y[r, :]: the Qwen2-MoE shared expert's gate.
struct SigmoidGatedAddParams {
  float* x = nullptr;           // [rows, n]
  const float* y = nullptr;     // [rows, n]
  const float* gate = nullptr;  // [rows] gate logits
  int rows = 0;
  int n = 0;
};

// x[i] = clamp(x[i], -limit, limit) (OLMoE clip_qkv).
struct ClampParams {
  float* x = nullptr;
  int64_t n = 0;
  float limit = 0.f;
};

// ids[r] = the lowest index of the largest value of row r (greedy decoding on the device,
// so a step copies R ids back instead of R x V logits). With NaNs in a row the CPU and
// CUDA kernels may differ; a row of NaNs gives 0.
struct ArgMaxParams {
  const float* x = nullptr;  // [rows, n]
  int rows = 0;
  int64_t n = 0;
  int32_t* ids = nullptr;  // [rows] out
};

// One token drawn per row on the backend (sampling on the device), each row with its own
// parameters and a uniform draw u in [0, 1) from its sequence's random stream:
//  - temperature below 1e-5: the row's ArgMax;
//  - else z = x / temperature; top_k in (0, n) keeps the entries whose z is at least the
//    k-th largest z (ties at the cut are all kept); top_p < 1 then keeps, of those, the
//    entries whose z is at least the largest cut c with softmax mass (over the kept
//    entries) of {z >= c} reaching top_p (ties at the cut are all kept);
//  - the token is the lowest index i with sum_{kept j <= i} e^(z_j - max z) greater than
//    u times the kept entries' sum, in index order (the last kept entry if rounding
//    leaves none).
// The CPU and CUDA kernels find the cuts by bisection over the floats' order (exact) and
// differ only in the rounding of the exponentials' sums.
struct SampleParams {
  const float* x = nullptr;  // [rows, n] logits
  int rows = 0;
  int64_t n = 0;
  const float* temperature = nullptr;  // [rows]
  const int32_t* top_k = nullptr;      // [rows]; 0: no top-k cut
  const float* top_p = nullptr;        // [rows]; 1: no nucleus cut
  const float* uniform = nullptr;      // [rows] in [0, 1)
  int32_t* ids = nullptr;              // [rows] out
};

// SCMoE self-contrast on the backend: for each pair i, row strong_row[i] of x (the strong
// pass's logits) becomes its scores, with row weak_row[i] (the weak pass's) read only, by
// kernels::cpu::ContrastRow's rule (kernels/cpu/contrast.h); Sample then draws from them.
struct SelfContrastRowsParams {
  float* x = nullptr;  // [rows, n] logits; strong rows overwritten
  int64_t n = 0;
  int pairs = 0;
  const int32_t* strong_row = nullptr;     // [pairs]
  const int32_t* weak_row = nullptr;       // [pairs]
  const float* inv_temperature = nullptr;  // [pairs]
  const float* log_alpha = nullptr;        // [pairs]
  const float* beta = nullptr;             // [pairs]
  const int32_t* ban_eos = nullptr;        // [pairs] 0 or 1
  const int32_t* eos_ids = nullptr;        // [num_eos]
  int num_eos = 0;
};

// ------------------------------------------------------------------------ attention, KV

// The paged KV cache of one layer, in blocks of B token slots, each head's part of a block
// contiguous (B * D floats: 4 KiB for D = 64), so attention streams whole blocks:
//   K: [num_blocks, num_kv_heads, D, B]  (keys transposed: for a dimension d the B keys'
//      values are adjacent, so attention scores 16 keys with one vector multiply-add per d
//      and no horizontal sum);
//   V: [num_blocks, num_kv_heads, B, D]  (a token's values adjacent, for the p.v sums).
// Token t at position p lives in block block_tables[token_seq[t]][p / B], slot p % B.

// Writes this step's K and V rows into the paged cache.
struct KvWriteParams {
  const float* k = nullptr;                      // [T, kv_dim]
  const float* v = nullptr;                      // [T, kv_dim]
  int num_tokens = 0;                            // T
  int kv_dim = 0;                                // num_kv_heads * D
  const int32_t* token_seq = nullptr;            // [T]
  const int32_t* positions = nullptr;            // [T]
  const int32_t* const* block_tables = nullptr;  // [S]
  int block_size = 16;                           // B
  int num_kv_heads = 0;                          // kv_dim = num_kv_heads * D
  float* k_cache = nullptr;                      // one layer: [num_blocks, Hkv, D, B]
  float* v_cache = nullptr;                      // one layer: [num_blocks, Hkv, B, D]
};

// Causal GQA attention over a paged KV cache. The caller has already written this step's
// K/V rows into the cache, so every token reads its keys, including its own, from there.
struct PagedAttentionParams {
  const float* q = nullptr;  // [T, num_q_heads, D], RoPE applied
  float* out = nullptr;      // [T, num_q_heads, D]
  int num_tokens = 0;        // T
  int num_q_heads = 0;
  int num_kv_heads = 0;                          // divides num_q_heads (GQA)
  int head_dim = 0;                              // D
  const int32_t* token_seq = nullptr;            // [T] sequence of each token
  const int32_t* positions = nullptr;            // [T] position; keys [0, position] are visible
  const int32_t* const* block_tables = nullptr;  // [S] -> block ids covering positions
  int block_size = 16;                           // B
  // One layer's cache (see above): K [num_blocks, Hkv, D, B], V [num_blocks, Hkv, B, D].
  const float* k_cache = nullptr;
  const float* v_cache = nullptr;
  float scale = 1.f;       // usually 1/sqrt(D)
  int sliding_window = 0;  // > 0: only keys with position > query position - window
};

// -------------------------------------------------------------------------------- MoE

// Routing rules of shared/specs/moe_algorithms.md section 6.
enum class RoutingRule {
  // p = softmax_fp32(logits); top-k of p; optionally w /= sum(w). Mixtral (always
  // renormalised; identical to top-k of logits then softmax over the k), Qwen2-MoE,
  // Qwen3-MoE and OLMoE (renormalised iff norm_topk_prob).
  kSoftmaxTopK,
};

inline constexpr int kMaxExperts = 1024;

// Ties between equal probabilities go to the lower expert id; slots are ordered by
// descending probability, as torch.topk orders them.
struct GatingParams {
  RoutingRule rule = RoutingRule::kSoftmaxTopK;
  const float* router_logits = nullptr;  // [T, E] fp32
  int num_tokens = 0;                    // T
  int num_experts = 0;                   // E
  int top_k = 0;                         // K
  bool renormalize = false;              // divide the k weights by their sum
  // Per-token overrides ([T] each, nullptr = none; 0 in a row = not set). The first one
  // set wins, in this order:
  //  - weak_rank r >= 1: SCMoE rank-r routing (specs 1.1): only the expert ranked r
  //    (1-based) by probability; its weight is 1.0 where the model renormalizes and its
  //    raw probability where it does not.
  //  - route_top_k n >= 1: the n most probable experts instead of K, renormalized as the
  //    model renormalizes.
  //  - route_top_p P > 0: the smallest prefix of experts by probability whose cumulative
  //    mass (fp32, summed in rank order) exceeds P, at least one expert and all E if no
  //    prefix does (specs 4.1); raw probabilities as weights.
  const int32_t* weak_rank = nullptr;    // [T]
  const int32_t* route_top_k = nullptr;  // [T]
  const float* route_top_p = nullptr;    // [T]
  // Slots per token in topk_ids and topk_weights: 0 means K. At least K and at least every
  // override's count (n for top_k, E where top_p is set).
  int slots = 0;
  int32_t* topk_ids = nullptr;    // [T, slots] out; -1 marks an unused slot
  float* topk_weights = nullptr;  // [T, slots] out; fp32

  int slot_count() const { return slots > 0 ? slots : top_k; }
};

// Histogram per expert, exclusive scan, stable counting sort of the (token, slot) pairs.
struct DispatchParams {
  const int32_t* topk_ids = nullptr;  // [T, K]; -1 = unused slot
  int num_tokens = 0;                 // T
  int top_k = 0;                      // K
  int num_experts = 0;                // E
  int32_t* expert_offsets = nullptr;  // [E + 1] out: rows of expert e are [off[e], off[e+1])
  // [T*K] out: pair index p = t*K + j for every used slot, grouped by expert and, inside
  // an expert, ascending in p (a stable counting sort). Only the first off[E] are set.
  int32_t* sorted_pairs = nullptr;
  int32_t* pair_to_row = nullptr;  // [T*K] out: row of pair p in sorted order, -1 if unused
};

// For each expert e with rows [off[e], off[e+1]): G = X_e W_gate_up[e]^T ([rows, 2I]),
// A = silu(G[:, :I]) * G[:, I:], Y = A W_down[e]^T ([rows, H]), where X_e are the rows of
// x of the tokens of those pairs. fp32 accumulation whatever the weights' dtype.
struct ExpertFfnParams {
  const float* x = nullptr;                 // [T, H] layer input (post-attention RMSNorm)
  const int32_t* sorted_pairs = nullptr;    // [P] from Dispatch
  const int32_t* expert_offsets = nullptr;  // [E + 1] from Dispatch
  int num_tokens = 0;                       // T
  int top_k = 0;                            // K
  int num_experts = 0;                      // E
  int hidden = 0;                           // H
  int inter = 0;                            // I
  // Host arrays of one matrix per expert, so weights may live anywhere (resident or an
  // offload slot). Experts without rows are never read and may have data == nullptr.
  const MatrixRef* w_gate_up = nullptr;  // host [E] -> [2I, H]: rows [0, I) gate, [I, 2I) up
  const MatrixRef* w_down = nullptr;     // host [E] -> [H, I]
  float* ws_x = nullptr;        // [P, H] workspace: gathered rows (CUDA; the CPU reads in place)
  float* ws_gate_up = nullptr;  // [P, 2I] workspace
  float* ws_act = nullptr;      // [P, I] workspace: silu(gate) * up
  float* y = nullptr;           // [P, H] out: expert output per sorted row
};

// out[t] = sum_j w[t, j] * y[row(t, j)], j ascending, so the result for a token does not
// depend on the rest of the batch.
struct CombineParams {
  const float* y = nullptr;              // [P, H] ExpertFfn output, sorted rows
  const int32_t* pair_to_row = nullptr;  // [T*K]
  const float* topk_weights = nullptr;   // [T, K]
  int num_tokens = 0;                    // T
  int top_k = 0;                         // K
  int hidden = 0;                        // H
  float* out = nullptr;                  // [T, H] out (overwritten)
};

}  // namespace moe::kernels
