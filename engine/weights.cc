#include "engine/weights.h"

#include <chrono>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/absl_compat.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"
#include "engine/models/registry.h"
#include "kernels/cpu/gemm.h"

namespace moe {

namespace cpu = kernels::cpu;
using kernels::WeightLayout;
using KDType = kernels::DType;

absl::StatusOr<WeightDtype> ParseWeightDtype(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(ToAbsl(name));
  if (n == "auto") return WeightDtype::kAuto;
  if (n == "float32" || n == "fp32" || n == "f32") return WeightDtype::kFloat32;
  if (n == "bfloat16" || n == "bf16") return WeightDtype::kBfloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", ToAbsl(name), "': use auto, float32 or bfloat16"));
}

const char* WeightDtypeName(WeightDtype dtype) {
  switch (dtype) {
    case WeightDtype::kAuto:
      return "auto";
    case WeightDtype::kFloat32:
      return "float32";
    case WeightDtype::kBfloat16:
      return "bfloat16";
  }
  return "?";
}

const char* PlacementName(Placement placement) {
  return placement == Placement::kStreamed ? "streamed" : "resident";
}

int64_t ModelWeights::expert_bytes(int layer, int expert) const {
  const LayerWeights& w = layers[layer];
  return static_cast<int64_t>(kernels::MatrixBytes(w.experts_gate_up[expert].ref) +
                              kernels::MatrixBytes(w.experts_down[expert].ref));
}

namespace {

cpu::SourceType SourceTypeOf(const TensorView& view) {
  switch (view.dtype) {
    case moe::DType::kBF16:
      return cpu::SourceType::kBF16;
    case moe::DType::kF16:
      return cpu::SourceType::kF16;
    default:
      return cpu::SourceType::kF32;  // GetChecked admits f32, f16 and bf16 only
  }
}

}  // namespace

// Reads the tensors of one checkpoint into a ModelWeights, one at a time.
class WeightLoader {
 public:
  WeightLoader(const ModelConfig& cfg, const Checkpoint& ckpt, Backend& backend, KDType dtype,
               ModelWeights* out)
      : cfg_(cfg), ckpt_(ckpt), backend_(backend), dtype_(dtype), out_(out) {}

  // A matrix stacked from one or more [rows_i, cols] tensors, in the backend's layout: into
  // `into` (a slice of an arena of MatrixBytes) when given, else its own buffer.
  absl::StatusOr<Weight> Matrix(std::initializer_list<std::pair<const std::string*, int64_t>> parts,
                                int64_t cols, bool expert = false, char* into = nullptr) {
    std::vector<const TensorView*> views;
    std::vector<cpu::PackSource> sources;
    int64_t rows = 0;
    for (const auto& [name, part_rows] : parts) {
      const int64_t shape[] = {part_rows, cols};
      MOE_ASSIGN_OR_RETURN(const TensorView* view, ckpt_.GetChecked(*name, shape));
      views.push_back(view);
      sources.push_back({view->data, SourceTypeOf(*view), part_rows});
      rows += part_rows;
    }
    MOE_ASSIGN_OR_RETURN(const std::byte* staged, Stage(views));
    for (size_t i = 0, at = 0; i < views.size(); at += views[i]->nbytes, ++i) {
      sources[i].data = staged + at;
    }
    const WeightLayout layout = backend_.weight_layout();
    const size_t bytes = kernels::MatrixBytes(dtype_, layout, rows, cols);
    Buffer buffer;
    if (into == nullptr) {
      MOE_ASSIGN_OR_RETURN(buffer, Allocate(bytes, *parts.begin()->first));
      into = static_cast<char*>(buffer.data());
    }
    if (layout == WeightLayout::kPanels16 && backend_.compute_memory() != MemoryKind::kDevice) {
      cpu::PackPanels(sources, cols, dtype_, into);
    } else {
      // Row-major: convert each part on the host, then copy it to the backend.
      std::vector<char> staging(bytes);
      size_t at = 0;
      for (const cpu::PackSource& s : sources) {
        cpu::ConvertRows(s.data, s.type, s.rows * cols, dtype_, staging.data() + at);
        at += static_cast<size_t>(s.rows * cols) * kernels::DTypeBytes(dtype_);
      }
      MOE_RETURN_IF_ERROR(backend_.CopyToBackend(into, staging.data(), bytes));
    }
    Weight w;
    w.ref = {into, dtype_, layout, rows, cols};
    Account(views, bytes, expert);
    if (buffer) out_->storage_.push_back(std::move(buffer));
    return w;
  }

  // One buffer for all of a layer's routed experts: few large allocations, each in huge
  // pages where the kernel gives them.
  absl::StatusOr<char*> ExpertArena(int64_t experts, int64_t gate_up_bytes, int64_t down_bytes,
                                    const std::string& what) {
    MOE_ASSIGN_OR_RETURN(Buffer buffer, Allocate(experts * (gate_up_bytes + down_bytes), what));
    char* data = static_cast<char*>(buffer.data());
    out_->storage_.push_back(std::move(buffer));
    return data;
  }

  absl::StatusOr<Weight> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    return Matrix({{&name, rows}}, cols);
  }

  // A row-major [rows, cols] table (the untied embedding): read by rows only.
  absl::StatusOr<Weight> Table(const std::string& name, int64_t rows, int64_t cols) {
    const int64_t shape[] = {rows, cols};
    MOE_ASSIGN_OR_RETURN(const TensorView* view, ckpt_.GetChecked(name, shape));
    const size_t bytes = static_cast<size_t>(rows * cols) * kernels::DTypeBytes(dtype_);
    MOE_ASSIGN_OR_RETURN(Buffer buffer, Allocate(bytes, name));
    MOE_ASSIGN_OR_RETURN(const std::byte* staged, Stage({view}));
    MOE_RETURN_IF_ERROR(Convert(*view, staged, buffer, dtype_));
    Weight w;
    w.ref = {buffer.data(), dtype_, WeightLayout::kRowMajor, rows, cols};
    Account({view}, bytes, false);
    out_->storage_.push_back(std::move(buffer));
    return w;
  }

  // An fp32 vector (norm weights, biases), whatever the model's dtype.
  absl::StatusOr<const float*> Vector(const std::string& name,
                                      std::initializer_list<int64_t> shape) {
    const std::span<const int64_t> s(shape.begin(), shape.size());
    MOE_ASSIGN_OR_RETURN(const TensorView* view, ckpt_.GetChecked(name, s));
    const size_t bytes = static_cast<size_t>(view->numel()) * sizeof(float);
    MOE_ASSIGN_OR_RETURN(Buffer buffer, Allocate(bytes, name));
    MOE_ASSIGN_OR_RETURN(const std::byte* staged, Stage({view}));
    MOE_RETURN_IF_ERROR(Convert(*view, staged, buffer, KDType::kF32));
    const float* data = buffer.as<float>();
    Account({view}, bytes, false);
    out_->storage_.push_back(std::move(buffer));
    return data;
  }

 private:
  absl::StatusOr<Buffer> Allocate(size_t bytes, const std::string& what) {
    absl::StatusOr<Buffer> buffer = backend_.Allocate(backend_.compute_memory(), bytes);
    if (!buffer.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot hold weight '", what, "' (", bytes,
                                                       " bytes): ", buffer.status().message()));
    }
    return buffer;
  }

  // The tensor's bytes (already staged at `src`) converted into `buffer`.
  absl::Status Convert(const TensorView& view, const std::byte* src, const Buffer& buffer,
                       KDType dtype) {
    if (buffer.kind() != MemoryKind::kDevice) {
      cpu::ConvertRows(src, SourceTypeOf(view), view.numel(), dtype, buffer.data());
      return absl::OkStatus();
    }
    std::vector<char> staging(buffer.bytes());
    cpu::ConvertRows(src, SourceTypeOf(view), view.numel(), dtype, staging.data());
    return backend_.CopyToBackend(buffer.data(), staging.data(), staging.size());
  }

  // Reads the tensors' bytes, end to end, into the staging buffer with pread: large
  // sequential reads, and no page of the checkpoint is ever mapped into this process, so
  // peak memory is the weights plus the largest tensor.
  absl::StatusOr<const std::byte*> Stage(const std::vector<const TensorView*>& views) {
    size_t total = 0;
    for (const TensorView* v : views) total += v->nbytes;
    if (staging_.size() < total) staging_.resize(total);
    size_t at = 0;
    for (const TensorView* v : views) {
      MOE_RETURN_IF_ERROR(ReadTensorBytes(*v, staging_.data() + at));
      at += v->nbytes;
    }
    return staging_.data();
  }

  // Counts what was read.
  void Account(const std::vector<const TensorView*>& views, size_t bytes, bool expert) {
    for (const TensorView* v : views) {
      out_->stats_.num_parameters += v->numel();
      out_->stats_.checkpoint_bytes += static_cast<int64_t>(v->nbytes);
    }
    out_->stats_.resident_bytes += static_cast<int64_t>(bytes);
    if (expert) out_->stats_.expert_bytes += static_cast<int64_t>(bytes);
  }

  const ModelConfig& cfg_;
  const Checkpoint& ckpt_;
  Backend& backend_;
  const KDType dtype_;
  ModelWeights* out_;
  std::vector<std::byte> staging_;

 public:
  absl::Status LoadAll() {
    const models::Architecture* arch = models::FindArchitecture(cfg_.architecture);
    if (arch == nullptr) {
      return absl::UnimplementedError("unsupported architecture " + cfg_.architecture);
    }
    const models::ModelTensorNames names = arch->tensor_names(cfg_);
    const int64_t H = cfg_.hidden_size, V = cfg_.vocab_size, D = cfg_.head_dim;
    const int64_t qd = cfg_.num_q_heads * D, kvd = cfg_.num_kv_heads * D;
    ModelWeights& m = *out_;
    if (names.lm_head.empty()) {
      // Tied: one matrix serves the LM head and the embedding lookups.
      MOE_ASSIGN_OR_RETURN(m.lm_head, Matrix(names.embed_tokens, V, H));
      m.embed = m.lm_head;
    } else {
      MOE_ASSIGN_OR_RETURN(m.embed, Table(names.embed_tokens, V, H));
      MOE_ASSIGN_OR_RETURN(m.lm_head, Matrix(names.lm_head, V, H));
    }
    MOE_ASSIGN_OR_RETURN(m.final_norm, Vector(names.final_norm, {H}));
    m.layers.resize(cfg_.num_layers);
    for (int i = 0; i < cfg_.num_layers; ++i) {
      const models::LayerTensorNames& n = names.layers[i];
      LayerWeights& w = m.layers[i];
      MOE_ASSIGN_OR_RETURN(w.input_norm, Vector(n.input_norm, {H}));
      MOE_ASSIGN_OR_RETURN(w.post_norm, Vector(n.post_attention_norm, {H}));
      MOE_ASSIGN_OR_RETURN(w.wq, Matrix(n.q_proj, qd, H));
      MOE_ASSIGN_OR_RETURN(w.wk, Matrix(n.k_proj, kvd, H));
      MOE_ASSIGN_OR_RETURN(w.wv, Matrix(n.v_proj, kvd, H));
      MOE_ASSIGN_OR_RETURN(w.wo, Matrix(n.o_proj, H, qd));
      if (cfg_.qkv_bias) {
        auto bias = [](const std::string& weight) {
          return weight.substr(0, weight.size() - std::string("weight").size()) + "bias";
        };
        MOE_ASSIGN_OR_RETURN(w.bq, Vector(bias(n.q_proj), {qd}));
        MOE_ASSIGN_OR_RETURN(w.bk, Vector(bias(n.k_proj), {kvd}));
        MOE_ASSIGN_OR_RETURN(w.bv, Vector(bias(n.v_proj), {kvd}));
        if (cfg_.o_bias) {
          MOE_ASSIGN_OR_RETURN(w.bo, Vector(bias(n.o_proj), {H}));
        }
      }
      if (cfg_.qk_norm == QkNorm::kPerHead) {
        MOE_ASSIGN_OR_RETURN(w.q_norm, Vector(n.q_norm, {D}));
        MOE_ASSIGN_OR_RETURN(w.k_norm, Vector(n.k_norm, {D}));
      } else if (cfg_.qk_norm == QkNorm::kFullWidth) {
        MOE_ASSIGN_OR_RETURN(w.q_norm, Vector(n.q_norm, {qd}));
        MOE_ASSIGN_OR_RETURN(w.k_norm, Vector(n.k_norm, {kvd}));
      }
      w.is_moe = cfg_.layer_is_moe[i];
      if (w.is_moe) {
        const int64_t E = cfg_.num_experts, I = cfg_.moe_intermediate_size;
        MOE_ASSIGN_OR_RETURN(w.router, Matrix(n.router, E, H));
        // Sizes rounded up to whole cache lines, so every expert starts on one.
        const WeightLayout layout = backend_.weight_layout();
        const int64_t gu_bytes = (kernels::MatrixBytes(dtype_, layout, 2 * I, H) + 63) / 64 * 64;
        const int64_t dn_bytes = (kernels::MatrixBytes(dtype_, layout, H, I) + 63) / 64 * 64;
        MOE_ASSIGN_OR_RETURN(char* arena, ExpertArena(E, gu_bytes, dn_bytes, n.expert_gate[0]));
        for (int e = 0; e < E; ++e) {
          char* slot = arena + e * (gu_bytes + dn_bytes);
          MOE_ASSIGN_OR_RETURN(
              Weight gu, Matrix({{&n.expert_gate[e], I}, {&n.expert_up[e], I}}, H, true, slot));
          w.experts_gate_up.push_back(gu);
          MOE_ASSIGN_OR_RETURN(Weight dn,
                               Matrix({{&n.expert_down[e], H}}, I, true, slot + gu_bytes));
          w.experts_down.push_back(dn);
        }
        if (!n.shared_expert_gate.empty()) {
          const int64_t Is = cfg_.shared_expert_intermediate_size;
          MOE_ASSIGN_OR_RETURN(w.shared_gate_up,
                               Matrix({{&n.shared_gate_proj, Is}, {&n.shared_up_proj, Is}}, H));
          MOE_ASSIGN_OR_RETURN(w.shared_down, Matrix(n.shared_down_proj, H, Is));
          MOE_ASSIGN_OR_RETURN(w.shared_gate, Matrix(n.shared_expert_gate, 1, H));
        }
      } else {
        const int64_t I = cfg_.intermediate_size;
        MOE_ASSIGN_OR_RETURN(w.mlp_gate_up,
                             Matrix({{&n.mlp_gate_proj, I}, {&n.mlp_up_proj, I}}, H));
        MOE_ASSIGN_OR_RETURN(w.mlp_down, Matrix(n.mlp_down_proj, H, I));
      }
    }
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const ModelConfig& config,
                                                                 const Checkpoint& checkpoint,
                                                                 Backend& backend,
                                                                 const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const models::Architecture* arch = models::FindArchitecture(config.architecture);
  if (arch == nullptr) {
    return absl::UnimplementedError("unsupported architecture " + config.architecture);
  }
  KDType dtype = KDType::kF32;
  switch (options.dtype) {
    case WeightDtype::kFloat32:
      dtype = KDType::kF32;
      break;
    case WeightDtype::kBfloat16:
      dtype = KDType::kBF16;
      break;
    case WeightDtype::kAuto: {
      // The checkpoint's dtype, read off its embedding table.
      MOE_ASSIGN_OR_RETURN(const TensorView* embed,
                           checkpoint.Get(arch->tensor_names(config).embed_tokens));
      dtype = embed->dtype == moe::DType::kBF16 ? KDType::kBF16 : KDType::kF32;
      break;
    }
  }
  std::unique_ptr<ModelWeights> weights(new ModelWeights());
  weights->stats_.dtype = dtype;
  WeightLoader loader(config, checkpoint, backend, dtype, weights.get());
  MOE_RETURN_IF_ERROR(loader.LoadAll());
  weights->stats_.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return weights;
}

}  // namespace moe
