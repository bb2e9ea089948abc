#include "engine/model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <dlfcn.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"
#include "engine/cpu_backend.h"
#include "engine/expert_source.h"
#include "engine/moe_layer.h"
#include "engine/workspace.h"

namespace moe {
namespace {

// The forward pass's scratch slots (engine/workspace.h).
enum Slot {
  kX,       // [T, H] residual stream
  kH,       // [T, H] normalised
  kQ,       // [T, Hq*D]
  kK,       // [T, Hkv*D]
  kV,       // [T, Hkv*D]
  kAttn,    // [T, Hq*D]
  kTmp,     // [T, H] a block's output
  kGateUp,  // [T, 2I] dense MLP
  kAct,     // [T, I] dense MLP
  kLastH,   // [R, H] the rows that get logits
  kLogits,  // [R, V] when the backend's memory is not the host's, or only argmaxed
  kArgMax,  // [R] the rows' argmax, on a device
  kStep,    // the step's arrays (StepArrays) in the backend's memory
};

// The CUDA backend lives in its own shared library (engine/cuda), opened on first use, so
// a process on the CPU never maps the CUDA runtime and cuBLAS. Looked for at
// $MOE_CUDA_BACKEND, then where this build put it, then in the bundle's lib/ beside bin/.
using CreateCudaBackend = void (*)(int, absl::StatusOr<std::unique_ptr<Backend>>*);
constexpr const char* kCudaBackendLibrary = "libmoe_cuda_backend.so";

absl::StatusOr<CreateCudaBackend> OpenCudaBackend() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MOE_CUDA_BACKEND"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
#ifdef MOE_CUDA_BACKEND_BUILD_PATH
  candidates.push_back(MOE_CUDA_BACKEND_BUILD_PATH);
#endif
  char exe[4096];
  if (const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1); n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir.resize(dir.rfind('/') + 1);
    candidates.push_back(dir + "../lib/" + kCudaBackendLibrary);
  }
  std::string errors;
  for (const std::string& path : candidates) {
    if (access(path.c_str(), F_OK) != 0) continue;
    // Never closed: the backend's code must outlive every object it made.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      absl::StrAppend(&errors, "; ", dlerror());
      continue;
    }
    if (void* sym = dlsym(handle, "moe_create_cuda_backend"); sym != nullptr) {
      return reinterpret_cast<CreateCudaBackend>(sym);
    }
    absl::StrAppend(&errors, "; ", path, " has no moe_create_cuda_backend");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "device 'cuda': the CUDA backend library (", kCudaBackendLibrary, ") could not be opened",
      errors.empty() ? std::string(": this build has none (configure with MOE_WITH_CUDA=ON on a "
                                   "machine with nvcc) or it is not beside the binary")
                     : errors));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend() {
  MOE_ASSIGN_OR_RETURN(const CreateCudaBackend create, OpenCudaBackend());
  absl::StatusOr<std::unique_ptr<Backend>> backend = absl::UnknownError("not created");
  create(0, &backend);
  return backend;
}

// Whether the NVIDIA driver is installed (without it there is no device to look for).
bool HaveCudaDriver() {
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (driver == nullptr) return false;
  dlclose(driver);
  return true;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device) {
  if (device == "cpu") return MakeCpuBackend();
  if (device == "cuda") return MakeCudaBackend();
  if (device == "auto") {
    if (!HaveCudaDriver()) return MakeCpuBackend();
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend();
    // No device, or a build without the CUDA backend: the CPU. A device that is present but
    // fails is an error.
    if (!cuda.ok() && absl::IsFailedPrecondition(cuda.status())) return MakeCpuBackend();
    return cuda;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "': use auto, cuda or cpu"));
}

// The step's host arrays as the backend's ops read them: in its compute memory, packed into
// one buffer so a device backend takes one copy per step (the CPU backend reads the same
// packing in place).
struct StepArrays {
  const int32_t* const* block_tables = nullptr;  // [S]
  const int32_t* token_ids = nullptr;            // [T]
  const int32_t* positions = nullptr;            // [T]
  const int32_t* token_seq = nullptr;            // [T]
  const int32_t* logit_rows = nullptr;           // [R]
  const int32_t* weak_rank = nullptr;            // [T] when any sequence overrides routing
  const int32_t* route_top_k = nullptr;          // [T]
  const float* route_top_p = nullptr;            // [T]
  // [R] each, when the step's tokens are drawn on the backend: kernels::SampleParams.
  const float* sample_temperature = nullptr;
  const int32_t* sample_top_k = nullptr;
  const float* sample_top_p = nullptr;
  const float* sample_uniform = nullptr;
  // SCMoE pairs combined on the backend: kernels::SelfContrastRowsParams.
  int contrast_pairs = 0;
  const int32_t* contrast_strong = nullptr;
  const int32_t* contrast_weak = nullptr;
  const float* contrast_inv_t = nullptr;
  const float* contrast_log_alpha = nullptr;
  const float* contrast_beta = nullptr;
  const int32_t* contrast_ban_eos = nullptr;
  const int32_t* eos_ids = nullptr;
};

}  // namespace

struct Model::Impl {
  ModelConfig cfg;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<ExpertSource> experts;
  std::vector<MoeLayerSpec> moe_specs;  // [num_layers]; unused for dense layers
  int64_t attention_weight_bytes = 0;   // of one layer's q/k/v/o (the same in every layer)
  std::unique_ptr<Workspace> ws, moe_ws;
  std::vector<int32_t> logit_rows;
  std::vector<std::byte> staging;  // the step's arrays, packed on the host
  Buffer plan_copies;              // pinned: every MoE layer's plan, copied for the counts
  uint64_t plan_generation = 0;    // counts plan_copies' reallocations
  // Recorded decode steps (CUDA graphs).
  struct StepGraph {
    std::unique_ptr<OpGraph> graph;
    uint64_t generation = 0;  // Impl::generation() when recorded
    int seen = 0;             // eager runs of this shape
    bool failed = false;      // recording failed: the shape runs eagerly
  };
  // By (tokens, block-table capacity, sampled on the backend).
  std::map<std::tuple<int, int, bool>, StepGraph> graphs;
  int64_t graph_replays = 0, graph_failures = 0;
  const bool graphs_enabled = [] {
    const char* v = std::getenv("MOE_CUDA_GRAPHS");
    return v == nullptr || std::string(v) != "0";
  }();

  absl::Status CheckBatch(const Batch& batch, const KvStorage& kv) const;
  absl::StatusOr<StepArrays> Stage(const Batch& batch, bool routing, bool sampling, int block_size,
                                   int table_capacity);
  uint64_t generation() const {
    return ws->generation() + moe_ws->generation() + backend->scratch_generation() +
           plan_generation;
  }
  absl::Status Attention(int layer, const LayerWeights& w, const Batch& batch, const StepArrays& st,
                         KvStorage& kv, const float* h, float* out);
  absl::Status DenseMlp(const LayerWeights& w, const float* h, int T, float* out);
  void Account(const Batch& batch, const ForwardOutput& out, int rows, ForwardOutput* acc) const;
};

absl::Status Model::Impl::CheckBatch(const Batch& batch, const KvStorage& kv) const {
  const int T = batch.num_tokens();
  if (batch.positions.size() != static_cast<size_t>(T) ||
      batch.token_seq.size() != static_cast<size_t>(T)) {
    return absl::InvalidArgumentError("batch: token arrays of different lengths");
  }
  const KvCacheShape& ks = kv.shape();
  if (ks.num_layers != cfg.num_layers || ks.num_kv_heads != cfg.num_kv_heads ||
      ks.head_dim != cfg.head_dim) {
    return absl::InvalidArgumentError("batch: KV cache shape does not match the model");
  }
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (seq.num_tokens < 1 || seq.first_token < 0 || seq.first_token + seq.num_tokens > T ||
        seq.block_table == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("batch: sequence ", s, " is malformed"));
    }
    if (seq.start_pos + seq.num_tokens > cfg.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch: sequence ", s, " reaches position ", seq.start_pos + seq.num_tokens,
                       ", past max_position_embeddings ", cfg.max_position_embeddings));
    }
    for (int i = 0; i < seq.num_tokens; ++i) {
      const int t = seq.first_token + i;
      if (batch.token_seq[t] != static_cast<int32_t>(s) ||
          batch.positions[t] != seq.start_pos + i) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch: tokens of sequence ", s, " are not contiguous and in order"));
      }
    }
    const RoutingOverride& r = seq.routing;
    if (r.any()) {
      if (cfg.num_experts == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "batch: sequence ", s, " overrides its routing, but the model has no routed experts"));
      }
      if (r.weak_rank < 0 || r.weak_rank > cfg.num_experts || r.top_k < 0 ||
          r.top_k > cfg.num_experts || !(r.top_p >= 0.f && r.top_p <= 1.f)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "batch: sequence ", s, "'s routing (weak_rank ", r.weak_rank, ", top_k ", r.top_k,
            ", top_p ", r.top_p, ") is outside [1, ", cfg.num_experts, "] experts or (0, 1]"));
      }
    }
    const int last_pos = seq.start_pos + seq.num_tokens - 1;
    for (int b = 0; b <= last_pos / ks.block_size; ++b) {
      if (seq.block_table[b] < 0 || seq.block_table[b] >= ks.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("batch: sequence ", s, " has block id ",
                                                       seq.block_table[b], " outside the cache"));
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    if (batch.token_ids[t] < 0 || batch.token_ids[t] >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch: token id ", batch.token_ids[t], " outside the vocabulary of ", cfg.vocab_size));
    }
  }
  return absl::OkStatus();
}

// table_capacity > 0 pads every block table to that many entries (a recorded decode graph
// needs the same layout at every step); 0 packs each as long as its sequence needs.
absl::StatusOr<StepArrays> Model::Impl::Stage(const Batch& batch, bool routing, bool sampling,
                                              int B, int table_capacity) {
  const size_t T = batch.token_ids.size(), S = batch.seqs.size(), R = logit_rows.size();
  // Layout: the S table pointers (8-byte aligned at the start), then 4-byte arrays: the
  // tables' entries, token ids, positions, token_seq, logit rows; the routing overrides
  // [T] when `routing`; the rows' sampling parameters [R] when `sampling`, and then the
  // SCMoE pairs to combine [pairs] and the model's EOS ids.
  std::vector<size_t> table_at(S);
  size_t n32 = 0;
  for (size_t s = 0; s < S; ++s) {
    const BatchSequence& seq = batch.seqs[s];
    table_at[s] = n32;
    n32 += table_capacity > 0 ? static_cast<size_t>(table_capacity)
                              : static_cast<size_t>((seq.start_pos + seq.num_tokens - 1) / B + 1);
  }
  const size_t ids_at = n32, pos_at = ids_at + T, seq_at = pos_at + T, rows_at = seq_at + T;
  const size_t weak_at = rows_at + R, topk_at = weak_at + (routing ? T : 0);
  const size_t topp_at = topk_at + (routing ? T : 0);
  const size_t temp_at = topp_at + (routing ? T : 0), stopk_at = temp_at + (sampling ? R : 0);
  const size_t stopp_at = stopk_at + (sampling ? R : 0), u_at = stopp_at + (sampling ? R : 0);
  // SCMoE pairs: the logit rows of each strong sequence and of the weak one after it.
  std::vector<int32_t> strong, weak;
  if (sampling) {
    std::vector<int32_t> row_of(S, -1);
    for (size_t r = 0; r < R; ++r) row_of[batch.token_seq[logit_rows[r]]] = static_cast<int32_t>(r);
    for (size_t s = 0; s < S; ++s) {
      if (!batch.seqs[s].backend_contrast.on) continue;
      if (s + 1 >= S || row_of[s] < 0 || row_of[s + 1] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "batch: sequence ", s, " contrasts with the next one, which has no sampled row"));
      }
      strong.push_back(row_of[s]);
      weak.push_back(row_of[s + 1]);
    }
  }
  const size_t P = strong.size(), num_eos = P > 0 ? cfg.eos_token_ids.size() : 0;
  const size_t cs_at = u_at + (sampling ? R : 0), cw_at = cs_at + P, ct_at = cw_at + P;
  const size_t ca_at = ct_at + P, cb_at = ca_at + P, ce_at = cb_at + P, eos_at = ce_at + P;
  n32 = eos_at + num_eos;
  const size_t ptr_bytes = S * sizeof(int32_t*);
  const size_t bytes = ptr_bytes + n32 * sizeof(int32_t);
  staging.assign(bytes, std::byte{0});

  const bool host = backend->compute_memory() != MemoryKind::kDevice;
  std::byte* base = staging.data();
  if (!host) {
    MOE_ASSIGN_OR_RETURN(base, ws->Get<std::byte>(kStep, bytes));
  }
  auto* i32 = reinterpret_cast<int32_t*>(staging.data() + ptr_bytes);
  auto at = [&](size_t i) { return reinterpret_cast<int32_t*>(base + ptr_bytes) + i; };
  auto* tables = reinterpret_cast<const int32_t**>(staging.data());
  for (size_t s = 0; s < S; ++s) {
    const BatchSequence& seq = batch.seqs[s];
    const size_t n = static_cast<size_t>((seq.start_pos + seq.num_tokens - 1) / B + 1);
    std::copy_n(seq.block_table, n, i32 + table_at[s]);
    tables[s] = at(table_at[s]);
  }
  std::copy_n(batch.token_ids.data(), T, i32 + ids_at);
  std::copy_n(batch.positions.data(), T, i32 + pos_at);
  std::copy_n(batch.token_seq.data(), T, i32 + seq_at);
  std::copy_n(logit_rows.data(), R, i32 + rows_at);
  StepArrays st;
  st.block_tables = reinterpret_cast<const int32_t* const*>(base);
  st.token_ids = at(ids_at);
  st.positions = at(pos_at);
  st.token_seq = at(seq_at);
  st.logit_rows = at(rows_at);
  if (routing) {
    for (size_t t = 0; t < T; ++t) {
      const RoutingOverride& r = batch.seqs[batch.token_seq[t]].routing;
      i32[weak_at + t] = r.weak_rank;
      i32[topk_at + t] = r.top_k;
      std::memcpy(i32 + topp_at + t, &r.top_p, sizeof(float));
    }
    st.weak_rank = at(weak_at);
    st.route_top_k = at(topk_at);
    st.route_top_p = reinterpret_cast<const float*>(at(topp_at));
  }
  if (sampling) {
    // The rows' parameters in logit-row order; a greedy row gets temperature 0.
    for (size_t r = 0; r < R; ++r) {
      const BatchSequence& seq = batch.seqs[batch.token_seq[logit_rows[r]]];
      const BatchSequence::BackendSample& b = seq.backend_sample;
      const float temperature = b.on ? b.temperature : 0.f;
      const float top_p = b.on ? b.top_p : 1.f;
      std::memcpy(i32 + temp_at + r, &temperature, sizeof(float));
      i32[stopk_at + r] = b.on ? b.top_k : 0;
      std::memcpy(i32 + stopp_at + r, &top_p, sizeof(float));
      std::memcpy(i32 + u_at + r, &b.uniform, sizeof(float));
    }
    st.sample_temperature = reinterpret_cast<const float*>(at(temp_at));
    st.sample_top_k = at(stopk_at);
    st.sample_top_p = reinterpret_cast<const float*>(at(stopp_at));
    st.sample_uniform = reinterpret_cast<const float*>(at(u_at));
  }
  if (P > 0) {
    for (size_t i = 0; i < P; ++i) {
      const BatchSequence::BackendContrast& c =
          batch.seqs[batch.token_seq[logit_rows[strong[i]]]].backend_contrast;
      const float inv_t = c.temperature > 0.f ? 1.f / c.temperature : 1.f;
      const float log_alpha = std::log(c.alpha);
      i32[cs_at + i] = strong[i];
      i32[cw_at + i] = weak[i];
      std::memcpy(i32 + ct_at + i, &inv_t, sizeof(float));
      std::memcpy(i32 + ca_at + i, &log_alpha, sizeof(float));
      std::memcpy(i32 + cb_at + i, &c.beta, sizeof(float));
      i32[ce_at + i] = c.ban_eos ? 1 : 0;
    }
    std::copy(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), i32 + eos_at);
    st.contrast_pairs = static_cast<int>(P);
    st.contrast_strong = at(cs_at);
    st.contrast_weak = at(cw_at);
    st.contrast_inv_t = reinterpret_cast<const float*>(at(ct_at));
    st.contrast_log_alpha = reinterpret_cast<const float*>(at(ca_at));
    st.contrast_beta = reinterpret_cast<const float*>(at(cb_at));
    st.contrast_ban_eos = at(ce_at);
    st.eos_ids = at(eos_at);
  }
  if (!host) MOE_RETURN_IF_ERROR(backend->CopyToBackend(base, staging.data(), bytes));
  return st;
}

absl::Status Model::Impl::Attention(int layer, const LayerWeights& w, const Batch& batch,
                                    const StepArrays& st, KvStorage& kv, const float* h,
                                    float* out) {
  Backend& be = *backend;
  const int T = batch.num_tokens();
  const int H = cfg.hidden_size, D = cfg.head_dim, Hq = cfg.num_q_heads, Hkv = cfg.num_kv_heads;
  const int qd = Hq * D, kvd = Hkv * D;
  MOE_ASSIGN_OR_RETURN(float* q, ws->Get<float>(kQ, static_cast<size_t>(T) * qd));
  MOE_ASSIGN_OR_RETURN(float* k, ws->Get<float>(kK, static_cast<size_t>(T) * kvd));
  MOE_ASSIGN_OR_RETURN(float* v, ws->Get<float>(kV, static_cast<size_t>(T) * kvd));
  kernels::LinearParams qkv[3];
  for (kernels::LinearParams& p : qkv) {
    p.x = h;
    p.ldx = H;
    p.m = T;
  }
  qkv[0].w = w.wq.ref;
  qkv[0].bias = w.bq;
  qkv[0].y = q;
  qkv[0].ldy = qd;
  qkv[1].w = w.wk.ref;
  qkv[1].bias = w.bk;
  qkv[1].y = k;
  qkv[1].ldy = kvd;
  qkv[2].w = w.wv.ref;
  qkv[2].bias = w.bv;
  qkv[2].y = v;
  qkv[2].ldy = kvd;
  MOE_RETURN_IF_ERROR(be.LinearBatch(qkv));
  if (cfg.qk_norm == QkNorm::kFullWidth) {  // OLMoE: over all heads, before the reshape
    MOE_RETURN_IF_ERROR(be.RmsNorm({q, w.q_norm, T, qd, cfg.rms_norm_eps, q}));
    MOE_RETURN_IF_ERROR(be.RmsNorm({k, w.k_norm, T, kvd, cfg.rms_norm_eps, k}));
  }
  if (cfg.clip_qkv > 0.f) {
    MOE_RETURN_IF_ERROR(be.Clamp({q, static_cast<int64_t>(T) * qd, cfg.clip_qkv}));
    MOE_RETURN_IF_ERROR(be.Clamp({k, static_cast<int64_t>(T) * kvd, cfg.clip_qkv}));
    MOE_RETURN_IF_ERROR(be.Clamp({v, static_cast<int64_t>(T) * kvd, cfg.clip_qkv}));
  }
  if (cfg.qk_norm == QkNorm::kPerHead) {  // Qwen3-MoE: per head
    MOE_RETURN_IF_ERROR(be.RmsNorm({q, w.q_norm, T * Hq, D, cfg.rms_norm_eps, q}));
    MOE_RETURN_IF_ERROR(be.RmsNorm({k, w.k_norm, T * Hkv, D, cfg.rms_norm_eps, k}));
  }
  kernels::RopeParams rope;
  rope.positions = st.positions;
  rope.num_tokens = T;
  rope.head_dim = D;
  rope.rotary_dim = D;
  rope.theta = cfg.rope_theta;
  rope.x = q;
  rope.num_heads = Hq;
  MOE_RETURN_IF_ERROR(be.Rope(rope));
  rope.x = k;
  rope.num_heads = Hkv;
  MOE_RETURN_IF_ERROR(be.Rope(rope));

  // Write this step's K/V into the paged cache, then attend over the cache.
  kernels::KvWriteParams kw;
  kw.k = k;
  kw.v = v;
  kw.num_tokens = T;
  kw.kv_dim = kvd;
  kw.token_seq = st.token_seq;
  kw.positions = st.positions;
  kw.block_tables = st.block_tables;
  kw.block_size = kv.shape().block_size;
  kw.num_kv_heads = Hkv;
  kw.k_cache = kv.Keys(layer);
  kw.v_cache = kv.Values(layer);
  MOE_RETURN_IF_ERROR(be.KvWrite(kw));
  MOE_ASSIGN_OR_RETURN(float* attn, ws->Get<float>(kAttn, static_cast<size_t>(T) * qd));
  kernels::PagedAttentionParams ap;
  ap.q = q;
  ap.out = attn;
  ap.num_tokens = T;
  ap.num_q_heads = Hq;
  ap.num_kv_heads = Hkv;
  ap.head_dim = D;
  ap.token_seq = st.token_seq;
  ap.positions = st.positions;
  ap.block_tables = st.block_tables;
  ap.block_size = kv.shape().block_size;
  ap.k_cache = kv.Keys(layer);
  ap.v_cache = kv.Values(layer);
  ap.scale = 1.f / std::sqrt(static_cast<float>(D));
  ap.sliding_window = cfg.sliding_window;
  MOE_RETURN_IF_ERROR(be.PagedAttention(ap));
  kernels::LinearParams o;
  o.x = attn;
  o.ldx = qd;
  o.m = T;
  o.w = w.wo.ref;
  o.bias = w.bo;
  o.y = out;
  o.ldy = H;
  return be.Linear(o);
}

absl::Status Model::Impl::DenseMlp(const LayerWeights& w, const float* h, int T, float* out) {
  const int H = cfg.hidden_size, I = cfg.intermediate_size;
  MOE_ASSIGN_OR_RETURN(float* gu, ws->Get<float>(kGateUp, static_cast<size_t>(T) * 2 * I));
  MOE_ASSIGN_OR_RETURN(float* act, ws->Get<float>(kAct, static_cast<size_t>(T) * I));
  kernels::LinearParams p;
  p.x = h;
  p.ldx = H;
  p.m = T;
  p.w = w.mlp_gate_up.ref;
  p.y = gu;
  p.ldy = 2 * I;
  MOE_RETURN_IF_ERROR(backend->Linear(p));
  MOE_RETURN_IF_ERROR(backend->SiluMul({gu, T, I, act}));
  p.x = act;
  p.ldx = I;
  p.w = w.mlp_down.ref;
  p.y = out;
  p.ldy = H;
  return backend->Linear(p);
}

// Bytes and FLOPs of a step, from its shapes and its routing.
void Model::Impl::Account(const Batch& batch, const ForwardOutput& routed, int rows,
                          ForwardOutput* out) const {
  const int T = batch.num_tokens();
  const int64_t H = cfg.hidden_size, D = cfg.head_dim;
  const int64_t kvd = static_cast<int64_t>(cfg.num_kv_heads) * D;
  const int64_t wbytes = static_cast<int64_t>(kernels::DTypeBytes(weights->stats().dtype));
  int64_t bytes = 0, flops = 0, keys = 0;
  for (int t = 0; t < T; ++t) {
    const int pos = batch.positions[t];
    keys += cfg.sliding_window > 0 ? std::min(pos + 1, cfg.sliding_window) : pos + 1;
  }
  const int E = std::max(cfg.num_experts, 1);
  for (int l = 0; l < cfg.num_layers; ++l) {
    const LayerWeights& w = weights->layers[l];
    bytes += attention_weight_bytes;
    flops += 2 * T * attention_weight_bytes / wbytes;
    // q.k and p.v: 2 multiply-adds per head dimension per (token, q head, key).
    flops += 4 * keys * cfg.num_q_heads * D;
    if (w.is_moe) {
      const int64_t router = kernels::MatrixBytes(w.router.ref);
      bytes += router;
      flops += 2 * T * router / wbytes;
      for (int e = 0; e < cfg.num_experts; ++e) {
        const int32_t n = routed.expert_tokens[static_cast<size_t>(l) * E + e];
        if (n == 0) continue;
        const int64_t eb = weights->expert_bytes(l, e);
        bytes += eb;
        flops += 2 * n * eb / wbytes;
      }
      if (w.shared_gate_up) {
        const int64_t sb = kernels::MatrixBytes(w.shared_gate_up.ref) +
                           kernels::MatrixBytes(w.shared_down.ref) +
                           kernels::MatrixBytes(w.shared_gate.ref);
        bytes += sb;
        flops += 2 * T * sb / wbytes;
      }
    } else {
      const int64_t mb =
          kernels::MatrixBytes(w.mlp_gate_up.ref) + kernels::MatrixBytes(w.mlp_down.ref);
      bytes += mb;
      flops += 2 * T * mb / wbytes;
    }
  }
  if (rows > 0) {
    const int64_t head = kernels::MatrixBytes(weights->lm_head.ref);
    bytes += head;
    flops += 2 * rows * head / wbytes;
  }
  bytes += T * H * wbytes;  // embedding rows
  out->weight_bytes = bytes;
  out->kv_bytes = keys * kvd * 2 * static_cast<int64_t>(sizeof(float)) * cfg.num_layers;
  out->flops = flops;
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelConfig& config,
                                                   const Checkpoint& checkpoint,
                                                   const LoadOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->cfg = config;
  MOE_ASSIGN_OR_RETURN(impl->backend, MakeBackend(options.device));
  MOE_ASSIGN_OR_RETURN(impl->weights,
                       ModelWeights::Load(config, checkpoint, *impl->backend, options));
  impl->experts = std::make_unique<ResidentExperts>(*impl->weights);
  impl->ws = std::make_unique<Workspace>(impl->backend.get());
  impl->moe_ws = std::make_unique<Workspace>(impl->backend.get());
  impl->moe_specs.resize(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    const LayerWeights& w = impl->weights->layers[l];
    if (!w.is_moe) continue;
    MoeLayerSpec& s = impl->moe_specs[l];
    s.hidden = config.hidden_size;
    s.inter = config.moe_intermediate_size;
    s.num_experts = config.num_experts;
    s.top_k = config.top_k;
    s.renormalize = config.norm_topk_prob;
    s.router = w.router.ref;
    if (w.shared_gate_up) {
      s.shared_inter = config.shared_expert_intermediate_size;
      s.shared_gate_up = w.shared_gate_up.ref;
      s.shared_down = w.shared_down.ref;
      s.shared_gate = w.shared_gate.ref;
    }
  }
  if (config.num_layers > 0) {
    const LayerWeights& w = impl->weights->layers[0];
    impl->attention_weight_bytes =
        static_cast<int64_t>(kernels::MatrixBytes(w.wq.ref) + kernels::MatrixBytes(w.wk.ref) +
                             kernels::MatrixBytes(w.wv.ref) + kernels::MatrixBytes(w.wo.ref));
  }
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const ModelConfig& Model::config() const { return impl_->cfg; }
Backend& Model::backend() const { return *impl_->backend; }
const ModelWeights& Model::weights() const { return *impl_->weights; }
int64_t Model::graph_replays() const { return impl_->graph_replays; }
int64_t Model::graph_failures() const { return impl_->graph_failures; }
int64_t Model::num_parameters() const { return impl_->weights->stats().num_parameters; }

KvCacheShape Model::KvShape(int num_blocks) const {
  KvCacheShape s;
  s.num_layers = impl_->cfg.num_layers;
  s.num_kv_heads = impl_->cfg.num_kv_heads;
  s.head_dim = impl_->cfg.head_dim;
  s.block_size = kKvBlockSize;
  s.num_blocks = num_blocks;
  return s;
}

absl::Status Model::Forward(const Batch& batch, KvStorage& kv, ForwardOutput* out) {
  Impl& m = *impl_;
  const ModelConfig& cfg = m.cfg;
  Backend& be = *m.backend;
  MOE_RETURN_IF_ERROR(m.CheckBatch(batch, kv));
  const int T = batch.num_tokens();
  const int H = cfg.hidden_size, V = cfg.vocab_size;
  const int E = std::max(cfg.num_experts, 1);
  out->logits.clear();
  out->rows_seq.clear();
  out->tokens.clear();
  out->expert_tokens.assign(static_cast<size_t>(cfg.num_layers) * E, 0);
  out->experts_per_token.assign(E + 1, 0);
  out->weight_bytes = out->kv_bytes = out->flops = 0;
  if (T == 0) return absl::OkStatus();

  // Per-token routing overrides, when any sequence has one; the MoE layers leave room for
  // the most experts any token may use.
  TokenRouting routing;
  bool any_override = false;
  for (const BatchSequence& seq : batch.seqs) {
    const int n =
        seq.routing.any() ? seq.routing.max_experts(cfg.top_k, cfg.num_experts) : cfg.top_k;
    routing.max_pairs += static_cast<int64_t>(seq.num_tokens) * n;
    if (!seq.routing.any()) continue;
    any_override = true;
    routing.slots = std::max(routing.slots, n);
  }
  // The rows that get logits: every token's, or each sampling sequence's last.
  m.logit_rows.clear();
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (batch.all_logits) {
      for (int i = 0; i < seq.num_tokens; ++i) {
        m.logit_rows.push_back(seq.first_token + i);
        out->rows_seq.push_back(static_cast<int32_t>(s));
      }
    } else if (seq.sample) {
      m.logit_rows.push_back(seq.first_token + seq.num_tokens - 1);
      out->rows_seq.push_back(static_cast<int32_t>(s));
    }
  }
  const int R = static_cast<int>(m.logit_rows.size());
  // A decode step (one token per sequence, each sampled, no overrides) on a backend with
  // graphs is recorded the second time its shape runs and replayed from then on. Its block
  // tables are padded to a power of two, so the shape changes rarely as sequences grow.
  const int B = kv.shape().block_size;
  bool decode = m.graphs_enabled && be.compute_memory() == MemoryKind::kDevice &&
                !batch.all_logits && !any_override;
  int table_capacity = 0;
  for (const BatchSequence& seq : batch.seqs) {
    decode = decode && seq.num_tokens == 1 && seq.sample;
    table_capacity = std::max(table_capacity, (seq.start_pos + seq.num_tokens - 1) / B + 1);
  }
  table_capacity =
      decode ? static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::max(table_capacity, 8))))
             : 0;
  // Every sampled row greedy: the backend argmaxes them. Every one greedy or drawn on the
  // backend, with some drawn: the backend samples them. Either way only the ids come back.
  bool argmax_only = R > 0 && !batch.all_logits, backend_sampled = false;
  for (const BatchSequence& seq : batch.seqs) {
    if (!seq.sample) continue;
    argmax_only = argmax_only && (seq.greedy || seq.backend_sample.on);
    backend_sampled = backend_sampled || seq.backend_sample.on;
  }
  const bool sample_on_backend = argmax_only && backend_sampled;
  MOE_ASSIGN_OR_RETURN(const StepArrays st,
                       m.Stage(batch, any_override, sample_on_backend, B, table_capacity));
  if (any_override) {
    routing.slots = std::max(routing.slots, cfg.top_k);
    routing.weak_rank = st.weak_rank;
    routing.top_k = st.route_top_k;
    routing.top_p = st.route_top_p;
  }

  // Each MoE layer's plan is copied here without waiting; the counts are read after the
  // step's last op.
  const int slots = std::max(routing.slots, cfg.top_k);
  const size_t plan_ints =
      static_cast<size_t>(E) + 1 + (any_override ? static_cast<size_t>(T) * slots : 0);
  const size_t plan_bytes = plan_ints * sizeof(int32_t) * cfg.num_layers;
  if (m.plan_copies.bytes() < plan_bytes) {
    m.plan_copies = Buffer();
    MOE_ASSIGN_OR_RETURN(m.plan_copies,
                         be.Allocate(MemoryKind::kPinnedHost, plan_bytes + plan_bytes / 2));
    ++m.plan_generation;
  }
  auto plan_of = [&](int layer) {
    MoePlanCopy plan;
    plan.offsets = m.plan_copies.as<int32_t>() + static_cast<size_t>(layer) * plan_ints;
    if (any_override) plan.ids = plan.offsets + E + 1;
    return plan;
  };

  // The step's ops, from the embedding to the LM head (and the argmax), with no wait for
  // the host on a device, so they can be recorded. The logits land in out->logits where
  // the backend computes in host memory and they are wanted, else in the workspace.
  const bool host = be.compute_memory() != MemoryKind::kDevice;
  const size_t num_logits = static_cast<size_t>(R) * V;
  if (argmax_only) {
    out->tokens.resize(R);
  } else {
    out->logits.resize(num_logits);
  }
  float* logits = out->logits.data();
  int32_t* ids = out->tokens.data();
  if (R > 0 && (!host || argmax_only)) {
    MOE_ASSIGN_OR_RETURN(logits, m.ws->Get<float>(kLogits, num_logits));
  }
  if (R > 0 && !host && argmax_only) {
    MOE_ASSIGN_OR_RETURN(ids, m.ws->Get<int32_t>(kArgMax, R));
  }
  auto issue = [&]() -> absl::Status {
    const size_t TH = static_cast<size_t>(T) * H;
    MOE_ASSIGN_OR_RETURN(float* x, m.ws->Get<float>(kX, TH));
    MOE_ASSIGN_OR_RETURN(float* h, m.ws->Get<float>(kH, TH));
    MOE_ASSIGN_OR_RETURN(float* tmp, m.ws->Get<float>(kTmp, TH));
    MOE_RETURN_IF_ERROR(be.Embedding({m.weights->embed.ref, st.token_ids, T, x}));
    for (int layer = 0; layer < cfg.num_layers; ++layer) {
      const LayerWeights& w = m.weights->layers[layer];
      MOE_RETURN_IF_ERROR(be.RmsNorm({x, w.input_norm, T, H, cfg.rms_norm_eps, h}));
      MOE_RETURN_IF_ERROR(m.Attention(layer, w, batch, st, kv, h, tmp));
      MOE_RETURN_IF_ERROR(be.Add({x, tmp, static_cast<int64_t>(TH)}));
      MOE_RETURN_IF_ERROR(be.RmsNorm({x, w.post_norm, T, H, cfg.rms_norm_eps, h}));
      if (w.is_moe) {
        MOE_RETURN_IF_ERROR(IssueMoeLayer(be, m.moe_specs[layer], *m.experts, layer, h, T,
                                          any_override ? &routing : nullptr, *m.moe_ws, tmp,
                                          plan_of(layer)));
      } else {
        MOE_RETURN_IF_ERROR(m.DenseMlp(w, h, T, tmp));
      }
      MOE_RETURN_IF_ERROR(be.Add({x, tmp, static_cast<int64_t>(TH)}));
    }
    if (R == 0) return absl::OkStatus();
    // Final norm and LM head on the rows that need logits.
    MOE_ASSIGN_OR_RETURN(float* last_h, m.ws->Get<float>(kLastH, static_cast<size_t>(R) * H));
    kernels::RmsNormParams fn{x,      m.weights->final_norm, R, H, cfg.rms_norm_eps,
                              last_h, st.logit_rows};
    MOE_RETURN_IF_ERROR(be.RmsNorm(fn));
    kernels::LinearParams head;
    head.x = last_h;
    head.ldx = H;
    head.m = R;
    head.w = m.weights->lm_head.ref;
    head.y = logits;
    head.ldy = V;
    MOE_RETURN_IF_ERROR(be.Linear(head));
    if (!argmax_only) return absl::OkStatus();
    if (st.contrast_pairs > 0) {
      kernels::SelfContrastRowsParams cp;
      cp.x = logits;
      cp.n = V;
      cp.pairs = st.contrast_pairs;
      cp.strong_row = st.contrast_strong;
      cp.weak_row = st.contrast_weak;
      cp.inv_temperature = st.contrast_inv_t;
      cp.log_alpha = st.contrast_log_alpha;
      cp.beta = st.contrast_beta;
      cp.ban_eos = st.contrast_ban_eos;
      cp.eos_ids = st.eos_ids;
      cp.num_eos = static_cast<int>(cfg.eos_token_ids.size());
      MOE_RETURN_IF_ERROR(be.SelfContrastRows(cp));
    }
    if (!sample_on_backend) return be.ArgMax({logits, R, V, ids});
    return be.Sample({logits, R, V, st.sample_temperature, st.sample_top_k, st.sample_top_p,
                      st.sample_uniform, ids});
  };

  // At most kMaxStepGraphs shapes are kept; others run eagerly.
  constexpr size_t kMaxStepGraphs = 64;
  Impl::StepGraph* graph = nullptr;
  if (decode && (m.graphs.size() < kMaxStepGraphs ||
                 m.graphs.count({T, table_capacity, sample_on_backend}) > 0)) {
    graph = &m.graphs[{T, table_capacity, sample_on_backend}];
  }
  if (graph != nullptr && graph->graph != nullptr && graph->generation == m.generation()) {
    MOE_RETURN_IF_ERROR(graph->graph->Replay());
    ++m.graph_replays;
  } else {
    MOE_RETURN_IF_ERROR(issue());
    if (graph != nullptr && !graph->failed && ++graph->seen >= 2) {
      // Recorded after an eager run of the same shape has sized every buffer it uses; a
      // recording that fails (an op that waits or allocates) leaves the shape eager.
      const uint64_t before = m.generation();
      absl::StatusOr<std::unique_ptr<OpGraph>> recorded = be.Capture(issue);
      if (recorded.ok() && m.generation() == before) {
        graph->graph = *std::move(recorded);
        graph->generation = before;
      } else {
        graph->graph = nullptr;
        graph->failed = true;
        ++m.graph_failures;
      }
    }
  }
  // The copy of the ids or logits (or a synchronize, without any) is the step's one wait.
  if (R > 0 && !host && argmax_only) {
    MOE_RETURN_IF_ERROR(be.CopyToHost(out->tokens.data(), ids, sizeof(int32_t) * R));
  } else if (R > 0 && !host) {
    MOE_RETURN_IF_ERROR(be.CopyToHost(out->logits.data(), logits, num_logits * sizeof(float)));
  } else {
    MOE_RETURN_IF_ERROR(be.Synchronize());
  }
  for (int layer = 0; layer < cfg.num_layers; ++layer) {
    if (!m.weights->layers[layer].is_moe) continue;
    CountMoePlan(m.moe_specs[layer], T, any_override ? &routing : nullptr, plan_of(layer),
                 out->expert_tokens.data() + static_cast<size_t>(layer) * E,
                 out->experts_per_token.data());
  }
  m.Account(batch, *out, R, out);
  return absl::OkStatus();
}

}  // namespace moe
