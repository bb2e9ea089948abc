#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/contrast.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace moe::kernels::cpu {
namespace {

// Element-wise work below this many elements stays on the calling thread.
constexpr int64_t kSerialElements = 1 << 14;

int64_t RowGrain(int64_t row_elems) {
  return std::max<int64_t>(1, kSerialElements / std::max<int64_t>(row_elems, 1));
}

}  // namespace

absl::Status CanImplement(const EmbeddingParams& p) {
  if (p.num_tokens < 0) return absl::InvalidArgumentError("embedding: negative T");
  if (p.num_tokens > 0 && (p.table.data == nullptr || p.ids == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError("embedding: null buffer");
  }
  if (p.table.rows < 1 || p.table.cols < 1) {
    return absl::InvalidArgumentError("embedding: empty table");
  }
  for (int t = 0; t < p.num_tokens; ++t) {
    if (p.ids[t] < 0 || p.ids[t] >= p.table.rows) {
      return absl::InvalidArgumentError(
          absl::StrFormat("embedding: id %d outside [0, %d)", p.ids[t], p.table.rows));
    }
  }
  return absl::OkStatus();
}

void Embedding(const EmbeddingParams& p) {
  const int64_t H = p.table.cols;
  const bool bf16 = p.table.dtype == DType::kBF16;
  const IsaKernels& k = Kernels();
  for (int t = 0; t < p.num_tokens; ++t) {
    const int64_t v = p.ids[t];
    float* out = p.out + t * H;
    if (p.table.layout == WeightLayout::kRowMajor) {
      if (bf16) {
        k.widen_bf16_row(static_cast<const uint16_t*>(p.table.data) + v * H, static_cast<int>(H),
                         out);
      } else {
        std::memcpy(out, static_cast<const float*>(p.table.data) + v * H, H * sizeof(float));
      }
      continue;
    }
    // Row v of a kPanels16 matrix: column v % 16 of panel v / 16.
    const int64_t kp = bf16 ? (H + 1) / 2 * 2 : H;
    const int64_t panel = (v / kPanelWidth) * kp * kPanelWidth;
    const int c = static_cast<int>(v % kPanelWidth);
    if (bf16) {
      const uint16_t* base = static_cast<const uint16_t*>(p.table.data) + panel;
      for (int64_t i = 0; i < H; ++i) out[i] = Bf16ToFloat(base[(i / 2) * 32 + 2 * c + (i & 1)]);
    } else {
      const float* base = static_cast<const float*>(p.table.data) + panel;
      for (int64_t i = 0; i < H; ++i) out[i] = base[i * 16 + c];
    }
  }
}

absl::Status CanImplement(const RmsNormParams& p) {
  if (p.rows < 0 || p.n < 1) return absl::InvalidArgumentError("rms_norm: bad shape");
  if (p.rows > 0 && (p.x == nullptr || p.weight == nullptr || p.y == nullptr)) {
    return absl::InvalidArgumentError("rms_norm: null buffer");
  }
  return absl::OkStatus();
}

void RmsNorm(const RmsNormParams& p) {
  const IsaKernels& k = Kernels();
  ParallelFor(p.rows, RowGrain(p.n), [&](int64_t r0, int64_t r1) {
    k.rms_norm_rows(p, static_cast<int>(r0), static_cast<int>(r1));
  });
}

absl::Status CanImplement(const RopeParams& p) {
  if (p.num_tokens < 0 || p.num_heads < 1 || p.head_dim < 2 || p.rotary_dim < 2 ||
      p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim) {
    return absl::InvalidArgumentError("rope: bad shape");
  }
  if (p.num_tokens > 0 && (p.x == nullptr || p.positions == nullptr)) {
    return absl::InvalidArgumentError("rope: null buffer");
  }
  return absl::OkStatus();
}

void Rope(const RopeParams& p) {
  const int half = p.rotary_dim / 2;
  // inv_freq as transformers computes it: 1 / theta^(arange(0, dim, 2) / dim) in fp32.
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] =
        1.f / std::pow(p.theta, static_cast<float>(2 * i) / static_cast<float>(p.rotary_dim));
  }
  ParallelFor(p.num_tokens, RowGrain(static_cast<int64_t>(p.num_heads) * p.head_dim * 8),
              [&](int64_t t0, int64_t t1) {
                std::vector<float> cos_v(half), sin_v(half);
                for (int64_t t = t0; t < t1; ++t) {
                  const float pos = static_cast<float>(p.positions[t]);
                  for (int i = 0; i < half; ++i) {
                    const float f = pos * inv_freq[i];
                    cos_v[i] = std::cos(f);
                    sin_v[i] = std::sin(f);
                  }
                  for (int h = 0; h < p.num_heads; ++h) {
                    float* v = p.x + (t * p.num_heads + h) * p.head_dim;
                    for (int i = 0; i < half; ++i) {
                      const float a = v[i];
                      const float b = v[i + half];
                      v[i] = a * cos_v[i] - b * sin_v[i];
                      v[i + half] = b * cos_v[i] + a * sin_v[i];
                    }
                  }
                }
              });
}

absl::Status CanImplement(const SiluMulParams& p) {
  if (p.rows < 0 || p.inter < 1) return absl::InvalidArgumentError("silu_mul: bad shape");
  if (p.rows > 0 && (p.gate_up == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError("silu_mul: null buffer");
  }
  return absl::OkStatus();
}

void SiluMul(const SiluMulParams& p) {
  const IsaKernels& k = Kernels();
  ParallelFor(p.rows, RowGrain(p.inter * 8), [&](int64_t r0, int64_t r1) {
    k.silu_mul_rows(p, static_cast<int>(r0), static_cast<int>(r1));
  });
}

void Add(const AddParams& p) {
  const IsaKernels& k = Kernels();
  ParallelFor(p.n, kSerialElements, [&](int64_t b, int64_t e) { k.add_range(p.x, p.y, b, e); });
}

absl::Status CanImplement(const SigmoidGatedAddParams& p) {
  if (p.rows < 0 || p.n < 1) return absl::InvalidArgumentError("sigmoid_gated_add: bad shape");
  if (p.rows > 0 && (p.x == nullptr || p.y == nullptr || p.gate == nullptr)) {
    return absl::InvalidArgumentError("sigmoid_gated_add: null buffer");
  }
  return absl::OkStatus();
}

void SigmoidGatedAdd(const SigmoidGatedAddParams& p) {
  const IsaKernels& k = Kernels();
  ParallelFor(p.rows, RowGrain(p.n), [&](int64_t r0, int64_t r1) {
    k.sigmoid_gated_add_rows(p, static_cast<int>(r0), static_cast<int>(r1));
  });
}

int32_t ArgMaxRow(const float* x, int64_t n) {
  const float best = MaxRow(x, n);
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == best) return static_cast<int32_t>(i);
  }
  return 0;  // only NaNs
}

absl::Status CanImplement(const ArgMaxParams& p) {
  if (p.rows < 0 || p.n < 1 || p.n > INT32_MAX) {
    return absl::InvalidArgumentError("argmax: bad shape");
  }
  if (p.rows > 0 && (p.x == nullptr || p.ids == nullptr)) {
    return absl::InvalidArgumentError("argmax: null buffer");
  }
  return absl::OkStatus();
}

void ArgMax(const ArgMaxParams& p) {
  ParallelFor(p.rows, RowGrain(p.n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) p.ids[r] = ArgMaxRow(p.x + r * p.n, p.n);
  });
}

absl::Status CanImplement(const SampleParams& p) {
  if (p.rows < 0 || p.n < 1 || p.n > INT32_MAX) {
    return absl::InvalidArgumentError("sample: bad shape");
  }
  if (p.rows > 0 && (p.x == nullptr || p.temperature == nullptr || p.top_k == nullptr ||
                     p.top_p == nullptr || p.uniform == nullptr || p.ids == nullptr)) {
    return absl::InvalidArgumentError("sample: null buffer");
  }
  return absl::OkStatus();
}

namespace {

// The largest key c with count(key >= c) >= k among keys[i] >= floor_key.
template <typename Weight>
uint32_t BisectCut(const std::vector<uint32_t>& keys, uint32_t floor_key, Weight weight,
                   double target) {
  uint32_t cut = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t candidate = cut | (1u << bit);
    double mass = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] >= candidate && keys[i] >= floor_key) mass += weight(i);
    }
    if (mass >= target) cut = candidate;
  }
  return cut;
}

}  // namespace

void Sample(const SampleParams& p) {
  std::vector<uint32_t> keys(p.n);
  std::vector<double> e(p.n);
  for (int r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.n;
    const float t = p.temperature[r];
    if (!(t >= 1e-5f)) {
      p.ids[r] = ArgMaxRow(x, p.n);
      continue;
    }
    const float inv_t = 1.f / t;
    float zmax = -INFINITY;
    for (int64_t i = 0; i < p.n; ++i) {
      const float z = x[i] * inv_t;
      keys[i] = OrderKey(z);
      zmax = std::max(zmax, z);
    }
    uint32_t floor_key = 0;
    const int32_t k = p.top_k[r];
    if (k > 0 && k < p.n) {
      floor_key = BisectCut(
          keys, 0, [](size_t) { return 1.0; }, k);
    }
    for (int64_t i = 0; i < p.n; ++i) {
      e[i] = keys[i] >= floor_key ? std::exp(static_cast<double>(x[i] * inv_t - zmax)) : 0.0;
    }
    if (p.top_p[r] < 1.f) {
      double total = 0;
      for (int64_t i = 0; i < p.n; ++i) total += e[i];
      floor_key = std::max(
          floor_key, BisectCut(
                         keys, floor_key, [&](size_t i) { return e[i]; }, p.top_p[r] * total));
      for (int64_t i = 0; i < p.n; ++i) {
        if (keys[i] < floor_key) e[i] = 0.0;
      }
    }
    double sum = 0;
    for (int64_t i = 0; i < p.n; ++i) sum += e[i];
    const double target = p.uniform[r] * sum;
    int32_t pick = -1, last = 0;
    double run = 0;
    for (int64_t i = 0; i < p.n && pick < 0; ++i) {
      if (e[i] == 0.0) continue;
      last = static_cast<int32_t>(i);
      run += e[i];
      if (run > target) pick = static_cast<int32_t>(i);
    }
    p.ids[r] = pick >= 0 ? pick : last;
  }
}

absl::Status CanImplement(const SelfContrastRowsParams& p) {
  if (p.pairs < 0 || p.n < 1 || p.n > INT32_MAX || p.num_eos < 0) {
    return absl::InvalidArgumentError("self_contrast_rows: bad shape");
  }
  if (p.pairs > 0 && (p.x == nullptr || p.strong_row == nullptr || p.weak_row == nullptr ||
                      p.inv_temperature == nullptr || p.log_alpha == nullptr || p.beta == nullptr ||
                      p.ban_eos == nullptr || (p.num_eos > 0 && p.eos_ids == nullptr))) {
    return absl::InvalidArgumentError("self_contrast_rows: null buffer");
  }
  return absl::OkStatus();
}

void SelfContrastRows(const SelfContrastRowsParams& p) {
  for (int i = 0; i < p.pairs; ++i) {
    ContrastRow(p.x + p.strong_row[i] * p.n, p.x + p.weak_row[i] * p.n, p.n, p.inv_temperature[i],
                p.log_alpha[i], p.beta[i], p.ban_eos[i] != 0, p.eos_ids, p.num_eos);
  }
}

void Clamp(const ClampParams& p) {
  for (int64_t i = 0; i < p.n; ++i) p.x[i] = std::clamp(p.x[i], -p.limit, p.limit);
}

absl::Status CanImplement(const KvWriteParams& p) {
  if (p.num_tokens < 0 || p.kv_dim < 1 || p.block_size < 1 || p.num_kv_heads < 1 ||
      p.kv_dim % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError("kv_write: bad shape");
  }
  if (p.num_tokens > 0 &&
      (p.k == nullptr || p.v == nullptr || p.token_seq == nullptr || p.positions == nullptr ||
       p.block_tables == nullptr || p.k_cache == nullptr || p.v_cache == nullptr)) {
    return absl::InvalidArgumentError("kv_write: null buffer");
  }
  return absl::OkStatus();
}

void KvWrite(const KvWriteParams& p) {
  const int B = p.block_size;
  for (int t = 0; t < p.num_tokens; ++t) {
    const int pos = p.positions[t];
    const int64_t block = p.block_tables[p.token_seq[t]][pos / B];
    const int slot = pos % B;
    // K transposed within the block: [Hkv][D][B]; V per head: [Hkv][B][D].
    const float* k = p.k + static_cast<int64_t>(t) * p.kv_dim;
    float* kc = p.k_cache + block * p.kv_dim * B + slot;
    for (int j = 0; j < p.kv_dim; ++j) kc[static_cast<int64_t>(j) * B] = k[j];
    const int D = p.kv_dim / p.num_kv_heads;
    for (int h = 0; h < p.num_kv_heads; ++h) {
      std::memcpy(p.v_cache + ((block * p.num_kv_heads + h) * B + slot) * D,
                  p.v + static_cast<int64_t>(t) * p.kv_dim + static_cast<int64_t>(h) * D,
                  sizeof(float) * D);
    }
  }
}

float ExpRow(const float* x, int64_t n, float scale, float shift, float* out) {
  return Kernels().exp_row(x, n, scale, shift, out);
}

float MaxRow(const float* x, int64_t n) { return Kernels().max_row(x, n); }

}  // namespace moe::kernels::cpu
