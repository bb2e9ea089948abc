#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"
#include "engine/models/registry.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/ops.h"

namespace moe {
namespace {

using Tensor = std::vector<float>;

struct LayerWeights {
  bool is_moe = false;
  Tensor input_norm, post_norm;  // [H]
  Tensor wq, wk, wv, wo;         // [Hq*D, H], [Hkv*D, H], [Hkv*D, H], [H, Hq*D]
  Tensor bq, bk, bv, bo;         // biases or empty
  Tensor q_norm, k_norm;         // [D] (per head) or [Hq*D] / [Hkv*D] (full width)
  // MoE
  Tensor router;                           // [E, H]
  Tensor experts_gate_up;                  // [E, 2I, H]
  Tensor experts_down;                     // [E, H, I]
  std::vector<const float*> gate_up_ptrs;  // [E]
  std::vector<const float*> down_ptrs;     // [E]
  Tensor shared_gate_up;                   // [2Is, H] or empty
  Tensor shared_down;                      // [H, Is]
  Tensor shared_expert_gate;               // [1, H]
  // dense MLP
  Tensor mlp_gate_up;  // [2I, H]
  Tensor mlp_down;     // [H, I]
};

// Reads gate [I, H] and up [I, H] into one [2I, H] block at `dst`.
absl::Status ReadGateUp(const Checkpoint& ckpt, const std::string& gate, const std::string& up,
                        int inter, int hidden, float* dst) {
  const int64_t shape[] = {inter, hidden};
  MOE_RETURN_IF_ERROR(ckpt.ReadF32(gate, shape, dst));
  return ckpt.ReadF32(up, shape, dst + static_cast<size_t>(inter) * hidden);
}

absl::StatusOr<Tensor> Read(const Checkpoint& ckpt, const std::string& name,
                            std::initializer_list<int64_t> shape) {
  return ckpt.ReadF32(name, shape);
}

}  // namespace

struct Model::Impl {
  ModelConfig cfg;
  Tensor embed;       // [V, H]
  Tensor final_norm;  // [H]
  Tensor lm_head;     // [V, H] (empty when tied to embed)
  std::vector<LayerWeights> layers;
  int64_t num_params = 0;

  // Step scratch, grown on demand.
  Tensor x, h, q, k, v, attn, tmp, router_logits, moe_out, shared_gu, shared_act, shared_out,
      gate_logit, ws_x, ws_gu, ws_act, ws_y, last_h;
  std::vector<int32_t> topk_ids, expert_offsets, sorted_pairs, pair_to_row, weak_rank;
  std::vector<float> topk_weights;
  std::vector<const int32_t*> block_tables;

  absl::Status LoadWeights(const Checkpoint& ckpt);
  absl::Status CheckBatch(const Batch& batch, const KvCacheView& kv) const;
  void Attention(int layer, const LayerWeights& w, const Batch& batch, KvCacheView& kv);
  void MoeBlock(int layer, const LayerWeights& w, const Batch& batch, ForwardOutput* out);
  void DenseMlp(const LayerWeights& w, int T);
};

absl::Status Model::Impl::LoadWeights(const Checkpoint& ckpt) {
  const models::Architecture* arch = models::FindArchitecture(cfg.architecture);
  if (arch == nullptr)
    return absl::UnimplementedError("unsupported architecture " + cfg.architecture);
  const models::ModelTensorNames names = arch->tensor_names(cfg);
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size, D = cfg.head_dim;
  const int64_t qd = cfg.num_q_heads * D, kvd = cfg.num_kv_heads * D;
  MOE_ASSIGN_OR_RETURN(embed, Read(ckpt, names.embed_tokens, {V, H}));
  MOE_ASSIGN_OR_RETURN(final_norm, Read(ckpt, names.final_norm, {H}));
  if (!names.lm_head.empty()) {
    MOE_ASSIGN_OR_RETURN(lm_head, Read(ckpt, names.lm_head, {V, H}));
  }
  layers.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    const models::LayerTensorNames& n = names.layers[i];
    LayerWeights& w = layers[i];
    MOE_ASSIGN_OR_RETURN(w.input_norm, Read(ckpt, n.input_norm, {H}));
    MOE_ASSIGN_OR_RETURN(w.post_norm, Read(ckpt, n.post_attention_norm, {H}));
    MOE_ASSIGN_OR_RETURN(w.wq, Read(ckpt, n.q_proj, {qd, H}));
    MOE_ASSIGN_OR_RETURN(w.wk, Read(ckpt, n.k_proj, {kvd, H}));
    MOE_ASSIGN_OR_RETURN(w.wv, Read(ckpt, n.v_proj, {kvd, H}));
    MOE_ASSIGN_OR_RETURN(w.wo, Read(ckpt, n.o_proj, {H, qd}));
    if (cfg.qkv_bias) {
      auto bias = [](const std::string& weight) {
        return weight.substr(0, weight.size() - std::string("weight").size()) + "bias";
      };
      MOE_ASSIGN_OR_RETURN(w.bq, Read(ckpt, bias(n.q_proj), {qd}));
      MOE_ASSIGN_OR_RETURN(w.bk, Read(ckpt, bias(n.k_proj), {kvd}));
      MOE_ASSIGN_OR_RETURN(w.bv, Read(ckpt, bias(n.v_proj), {kvd}));
      if (cfg.o_bias) {
        MOE_ASSIGN_OR_RETURN(w.bo, Read(ckpt, bias(n.o_proj), {H}));
      }
    }
    if (cfg.qk_norm == QkNorm::kPerHead) {
      MOE_ASSIGN_OR_RETURN(w.q_norm, Read(ckpt, n.q_norm, {D}));
      MOE_ASSIGN_OR_RETURN(w.k_norm, Read(ckpt, n.k_norm, {D}));
    } else if (cfg.qk_norm == QkNorm::kFullWidth) {
      MOE_ASSIGN_OR_RETURN(w.q_norm, Read(ckpt, n.q_norm, {qd}));
      MOE_ASSIGN_OR_RETURN(w.k_norm, Read(ckpt, n.k_norm, {kvd}));
    }
    w.is_moe = cfg.layer_is_moe[i];
    if (w.is_moe) {
      const int64_t E = cfg.num_experts, I = cfg.moe_intermediate_size;
      MOE_ASSIGN_OR_RETURN(w.router, Read(ckpt, n.router, {E, H}));
      w.experts_gate_up.resize(E * 2 * I * H);
      w.experts_down.resize(E * H * I);
      for (int e = 0; e < E; ++e) {
        float* gu = w.experts_gate_up.data() + e * 2 * I * H;
        float* dn = w.experts_down.data() + e * H * I;
        MOE_RETURN_IF_ERROR(ReadGateUp(ckpt, n.expert_gate[e], n.expert_up[e], I, H, gu));
        const int64_t down_shape[] = {H, I};
        MOE_RETURN_IF_ERROR(ckpt.ReadF32(n.expert_down[e], down_shape, dn));
        w.gate_up_ptrs.push_back(gu);
        w.down_ptrs.push_back(dn);
      }
      if (!n.shared_expert_gate.empty()) {
        const int64_t Is = cfg.shared_expert_intermediate_size;
        w.shared_gate_up.resize(2 * Is * H);
        MOE_RETURN_IF_ERROR(
            ReadGateUp(ckpt, n.shared_gate_proj, n.shared_up_proj, Is, H, w.shared_gate_up.data()));
        MOE_ASSIGN_OR_RETURN(w.shared_down, Read(ckpt, n.shared_down_proj, {H, Is}));
        MOE_ASSIGN_OR_RETURN(w.shared_expert_gate, Read(ckpt, n.shared_expert_gate, {1, H}));
      }
    } else {
      const int64_t I = cfg.intermediate_size;
      w.mlp_gate_up.resize(2 * I * H);
      MOE_RETURN_IF_ERROR(
          ReadGateUp(ckpt, n.mlp_gate_proj, n.mlp_up_proj, I, H, w.mlp_gate_up.data()));
      MOE_ASSIGN_OR_RETURN(w.mlp_down, Read(ckpt, n.mlp_down_proj, {H, I}));
    }
  }
  num_params = embed.size() + final_norm.size() + lm_head.size();
  for (const LayerWeights& w : layers) {
    for (const Tensor* t : {&w.input_norm,   &w.post_norm,
                            &w.wq,           &w.wk,
                            &w.wv,           &w.wo,
                            &w.bq,           &w.bk,
                            &w.bv,           &w.bo,
                            &w.q_norm,       &w.k_norm,
                            &w.router,       &w.experts_gate_up,
                            &w.experts_down, &w.shared_gate_up,
                            &w.shared_down,  &w.shared_expert_gate,
                            &w.mlp_gate_up,  &w.mlp_down}) {
      num_params += static_cast<int64_t>(t->size());
    }
  }
  return absl::OkStatus();
}

absl::Status Model::Impl::CheckBatch(const Batch& batch, const KvCacheView& kv) const {
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

void Model::Impl::Attention(int layer, const LayerWeights& w, const Batch& batch, KvCacheView& kv) {
  const int T = batch.num_tokens();
  const int H = cfg.hidden_size, D = cfg.head_dim, Hq = cfg.num_q_heads, Hkv = cfg.num_kv_heads;
  const int qd = Hq * D, kvd = Hkv * D;
  q.resize(static_cast<size_t>(T) * qd);
  k.resize(static_cast<size_t>(T) * kvd);
  v.resize(static_cast<size_t>(T) * kvd);
  kernels::Linear(h.data(), w.wq.data(), w.bq.empty() ? nullptr : w.bq.data(), T, qd, H, q.data());
  kernels::Linear(h.data(), w.wk.data(), w.bk.empty() ? nullptr : w.bk.data(), T, kvd, H, k.data());
  kernels::Linear(h.data(), w.wv.data(), w.bv.empty() ? nullptr : w.bv.data(), T, kvd, H, v.data());
  if (cfg.qk_norm == QkNorm::kFullWidth) {
    kernels::RmsNorm(q.data(), w.q_norm.data(), T, qd, cfg.rms_norm_eps, q.data());
    kernels::RmsNorm(k.data(), w.k_norm.data(), T, kvd, cfg.rms_norm_eps, k.data());
  }
  if (cfg.clip_qkv > 0.f) {
    kernels::Clamp(q.data(), q.size(), cfg.clip_qkv);
    kernels::Clamp(k.data(), k.size(), cfg.clip_qkv);
    kernels::Clamp(v.data(), v.size(), cfg.clip_qkv);
  }
  if (cfg.qk_norm == QkNorm::kPerHead) {
    kernels::RmsNorm(q.data(), w.q_norm.data(), T * Hq, D, cfg.rms_norm_eps, q.data());
    kernels::RmsNorm(k.data(), w.k_norm.data(), T * Hkv, D, cfg.rms_norm_eps, k.data());
  }
  kernels::RopeParams rope;
  rope.positions = batch.positions.data();
  rope.num_tokens = T;
  rope.head_dim = D;
  rope.rotary_dim = D;
  rope.theta = cfg.rope_theta;
  rope.x = q.data();
  rope.num_heads = Hq;
  kernels::Rope(rope);
  rope.x = k.data();
  rope.num_heads = Hkv;
  kernels::Rope(rope);

  // Write this step's K/V into the paged cache, then attend over the cache.
  const int B = kv.shape().block_size;
  float* kc = kv.Keys(layer);
  float* vc = kv.Values(layer);
  for (int t = 0; t < T; ++t) {
    const int pos = batch.positions[t];
    const int32_t* table = batch.seqs[batch.token_seq[t]].block_table;
    const size_t slot = static_cast<size_t>(table[pos / B]) * B + pos % B;
    std::memcpy(kc + slot * kvd, k.data() + static_cast<size_t>(t) * kvd, sizeof(float) * kvd);
    std::memcpy(vc + slot * kvd, v.data() + static_cast<size_t>(t) * kvd, sizeof(float) * kvd);
  }
  attn.resize(static_cast<size_t>(T) * qd);
  kernels::PagedAttentionParams ap;
  ap.q = q.data();
  ap.out = attn.data();
  ap.num_tokens = T;
  ap.num_q_heads = Hq;
  ap.num_kv_heads = Hkv;
  ap.head_dim = D;
  ap.token_seq = batch.token_seq.data();
  ap.positions = batch.positions.data();
  ap.block_tables = block_tables.data();
  ap.block_size = B;
  ap.k_cache = kc;
  ap.v_cache = vc;
  ap.scale = 1.f / std::sqrt(static_cast<float>(D));
  ap.sliding_window = cfg.sliding_window;
  kernels::PagedAttention(ap);
  tmp.resize(static_cast<size_t>(T) * H);
  kernels::Linear(attn.data(), w.wo.data(), w.bo.empty() ? nullptr : w.bo.data(), T, H, qd,
                  tmp.data());
}

void Model::Impl::MoeBlock(int layer, const LayerWeights& w, const Batch& batch,
                           ForwardOutput* out) {
  const int T = batch.num_tokens();
  const int H = cfg.hidden_size, E = cfg.num_experts, K = cfg.top_k;
  const int I = cfg.moe_intermediate_size;
  const size_t P = static_cast<size_t>(T) * K;
  router_logits.resize(static_cast<size_t>(T) * E);
  kernels::Linear(h.data(), w.router.data(), nullptr, T, E, H, router_logits.data());

  topk_ids.resize(P);
  topk_weights.resize(P);
  kernels::GatingParams gp;
  gp.router_logits = router_logits.data();
  gp.num_tokens = T;
  gp.num_experts = E;
  gp.top_k = K;
  gp.renormalize = cfg.norm_topk_prob;
  gp.weak_rank = weak_rank.data();
  gp.topk_ids = topk_ids.data();
  gp.topk_weights = topk_weights.data();
  kernels::Gating(gp);

  expert_offsets.resize(E + 1);
  sorted_pairs.resize(P);
  pair_to_row.resize(P);
  kernels::DispatchParams dp;
  dp.topk_ids = topk_ids.data();
  dp.num_tokens = T;
  dp.top_k = K;
  dp.num_experts = E;
  dp.expert_offsets = expert_offsets.data();
  dp.sorted_pairs = sorted_pairs.data();
  dp.pair_to_row = pair_to_row.data();
  kernels::Dispatch(dp);
  for (int e = 0; e < E; ++e) {
    out->expert_tokens[static_cast<size_t>(layer) * E + e] =
        expert_offsets[e + 1] - expert_offsets[e];
  }

  ws_x.resize(P * H);
  ws_gu.resize(P * 2 * I);
  ws_act.resize(P * I);
  ws_y.resize(P * H);
  kernels::ExpertFfnParams ep;
  ep.x = h.data();
  ep.sorted_pairs = sorted_pairs.data();
  ep.expert_offsets = expert_offsets.data();
  ep.num_tokens = T;
  ep.top_k = K;
  ep.num_experts = E;
  ep.hidden = H;
  ep.inter = I;
  ep.w_gate_up = w.gate_up_ptrs.data();
  ep.w_down = w.down_ptrs.data();
  ep.ws_x = ws_x.data();
  ep.ws_gate_up = ws_gu.data();
  ep.ws_act = ws_act.data();
  ep.y = ws_y.data();
  kernels::ExpertFfn(ep);

  tmp.resize(static_cast<size_t>(T) * H);
  kernels::CombineParams cp;
  cp.y = ws_y.data();
  cp.pair_to_row = pair_to_row.data();
  cp.topk_weights = topk_weights.data();
  cp.num_tokens = T;
  cp.top_k = K;
  cp.hidden = H;
  cp.out = tmp.data();
  kernels::Combine(cp);

  if (!w.shared_gate_up.empty()) {
    // Qwen2-MoE: + sigmoid(shared_expert_gate(x)) * SwiGLU_shared(x)
    const int Is = cfg.shared_expert_intermediate_size;
    shared_gu.resize(static_cast<size_t>(T) * 2 * Is);
    shared_act.resize(static_cast<size_t>(T) * Is);
    shared_out.resize(static_cast<size_t>(T) * H);
    gate_logit.resize(T);
    kernels::Linear(h.data(), w.shared_gate_up.data(), nullptr, T, 2 * Is, H, shared_gu.data());
    kernels::SiluMul(shared_gu.data(), T, Is, shared_act.data());
    kernels::Linear(shared_act.data(), w.shared_down.data(), nullptr, T, H, Is, shared_out.data());
    kernels::Linear(h.data(), w.shared_expert_gate.data(), nullptr, T, 1, H, gate_logit.data());
    for (int t = 0; t < T; ++t) {
      const float g = 1.f / (1.f + std::exp(-gate_logit[t]));
      float* o = tmp.data() + static_cast<size_t>(t) * H;
      const float* s = shared_out.data() + static_cast<size_t>(t) * H;
      for (int j = 0; j < H; ++j) o[j] += g * s[j];
    }
  }
}

void Model::Impl::DenseMlp(const LayerWeights& w, int T) {
  const int H = cfg.hidden_size, I = cfg.intermediate_size;
  ws_gu.resize(static_cast<size_t>(T) * 2 * I);
  ws_act.resize(static_cast<size_t>(T) * I);
  tmp.resize(static_cast<size_t>(T) * H);
  kernels::Linear(h.data(), w.mlp_gate_up.data(), nullptr, T, 2 * I, H, ws_gu.data());
  kernels::SiluMul(ws_gu.data(), T, I, ws_act.data());
  kernels::Linear(ws_act.data(), w.mlp_down.data(), nullptr, T, H, I, tmp.data());
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelConfig& config,
                                                   const Checkpoint& checkpoint) {
  auto impl = std::make_unique<Impl>();
  impl->cfg = config;
  MOE_RETURN_IF_ERROR(impl->LoadWeights(checkpoint));
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const ModelConfig& Model::config() const { return impl_->cfg; }
int64_t Model::num_parameters() const { return impl_->num_params; }

KvCacheShape Model::KvShape(int num_blocks) const {
  KvCacheShape s;
  s.num_layers = impl_->cfg.num_layers;
  s.num_kv_heads = impl_->cfg.num_kv_heads;
  s.head_dim = impl_->cfg.head_dim;
  s.block_size = kKvBlockSize;
  s.num_blocks = num_blocks;
  return s;
}

absl::Status Model::Forward(const Batch& batch, KvCacheView& kv, ForwardOutput* out) {
  Impl& m = *impl_;
  const ModelConfig& cfg = m.cfg;
  MOE_RETURN_IF_ERROR(m.CheckBatch(batch, kv));
  const int T = batch.num_tokens();
  const int H = cfg.hidden_size, V = cfg.vocab_size;
  out->logits.clear();
  out->rows_seq.clear();
  out->expert_tokens.assign(static_cast<size_t>(cfg.num_layers) * std::max(cfg.num_experts, 1), 0);
  if (T == 0) return absl::OkStatus();

  m.block_tables.resize(batch.seqs.size());
  m.weak_rank.resize(T);
  for (size_t s = 0; s < batch.seqs.size(); ++s) m.block_tables[s] = batch.seqs[s].block_table;
  for (int t = 0; t < T; ++t) m.weak_rank[t] = batch.seqs[batch.token_seq[t]].weak_rank;

  m.x.resize(static_cast<size_t>(T) * H);
  for (int t = 0; t < T; ++t) {
    std::memcpy(m.x.data() + static_cast<size_t>(t) * H,
                m.embed.data() + static_cast<size_t>(batch.token_ids[t]) * H, sizeof(float) * H);
  }
  m.h.resize(static_cast<size_t>(T) * H);
  for (int layer = 0; layer < cfg.num_layers; ++layer) {
    const LayerWeights& w = m.layers[layer];
    kernels::RmsNorm(m.x.data(), w.input_norm.data(), T, H, cfg.rms_norm_eps, m.h.data());
    m.Attention(layer, w, batch, kv);
    kernels::AddInPlace(m.x.data(), m.tmp.data(), static_cast<int64_t>(T) * H);
    kernels::RmsNorm(m.x.data(), w.post_norm.data(), T, H, cfg.rms_norm_eps, m.h.data());
    if (w.is_moe) {
      m.MoeBlock(layer, w, batch, out);
    } else {
      m.DenseMlp(w, T);
    }
    kernels::AddInPlace(m.x.data(), m.tmp.data(), static_cast<int64_t>(T) * H);
  }

  // Final norm and LM head on the rows that need logits.
  std::vector<int> rows;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (batch.all_logits) {
      for (int i = 0; i < seq.num_tokens; ++i) {
        rows.push_back(seq.first_token + i);
        out->rows_seq.push_back(static_cast<int32_t>(s));
      }
    } else if (seq.sample) {
      rows.push_back(seq.first_token + seq.num_tokens - 1);
      out->rows_seq.push_back(static_cast<int32_t>(s));
    }
  }
  const int R = static_cast<int>(rows.size());
  m.last_h.resize(static_cast<size_t>(R) * H);
  for (int r = 0; r < R; ++r) {
    kernels::RmsNorm(m.x.data() + static_cast<size_t>(rows[r]) * H, m.final_norm.data(), 1, H,
                     cfg.rms_norm_eps, m.last_h.data() + static_cast<size_t>(r) * H);
  }
  out->logits.resize(static_cast<size_t>(R) * V);
  const float* head = m.lm_head.empty() ? m.embed.data() : m.lm_head.data();
  kernels::Linear(m.last_h.data(), head, nullptr, R, V, H, out->logits.data());
  return absl::OkStatus();
}

}  // namespace moe
