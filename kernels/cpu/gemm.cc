#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace moe::kernels::cpu {
namespace {

// Work below this many multiply-adds runs on the calling thread: waking a worker costs
// about a microsecond, as much as a few hundred thousand multiply-adds.
constexpr int64_t kSerialMacs = 1 << 17;
// A work item: at most this many panels (128 output columns) by this many rows, so that
// its weights (and, for tall problems, its rows of x) stay in the L2 cache.
constexpr int kItemPanels = 8;
constexpr int kItemRows = 96;

struct Item {
  int problem;
  int m0, m1;
  int p0, p1;
  int64_t cost;  // what the split balances; see ItemCost
};

// An item's cost for splitting work between threads: its multiply-adds, but never less
// than the time its weights take to stream. A weight panel costs as much to read as this
// many rows cost to multiply with it (bytes per element x the machine's FLOP/byte
// balance: about 5 rows of bf16 on the 2-core EPYC of bench/RESULTS.md); so items whose
// few rows share a weight read cost what their bytes cost, and threads get equal bytes
// at small batch and equal FLOPs at large batch.
int64_t ItemCost(int rows, int panels, int64_t K, DType dtype) {
  const int64_t floor_rows = dtype == DType::kBF16 ? 5 : 10;
  return std::max<int64_t>(rows, floor_rows) * panels * kPanelWidth * K;
}

int64_t Panels(const LinearParams& p) { return (p.w.rows + kPanelWidth - 1) / kPanelWidth; }

}  // namespace

absl::Status CanImplement(const LinearParams& p) {
  if (p.m < 0) return absl::InvalidArgumentError(absl::StrFormat("linear: m=%d < 0", p.m));
  if (p.w.layout != WeightLayout::kPanels16) {
    return absl::InvalidArgumentError("linear: the CPU GEMM reads kPanels16 weights");
  }
  if (p.w.dtype != DType::kF32 && p.w.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("linear: weights must be f32 or bf16");
  }
  if (p.w.rows < 1 || p.w.cols < 1 || p.w.rows > std::numeric_limits<int32_t>::max() ||
      p.w.cols > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("linear: weight shape [%d, %d] outside [1, 2^31)", p.w.rows, p.w.cols));
  }
  if (p.m > 0 && (p.x == nullptr || p.y == nullptr || p.w.data == nullptr)) {
    return absl::InvalidArgumentError("linear: null buffer");
  }
  if (p.ldx < p.w.cols || p.ldy < p.w.rows) {
    return absl::InvalidArgumentError(absl::StrFormat("linear: ldx=%d < K=%d or ldy=%d < N=%d",
                                                      p.ldx, p.w.cols, p.ldy, p.w.rows));
  }
  return absl::OkStatus();
}

void Linear(const LinearParams& p) { LinearBatch(std::span<const LinearParams>(&p, 1)); }

void LinearBatch(std::span<const LinearParams> problems) {
  const IsaKernels& k = Kernels();
  std::vector<Item> items;
  int64_t total = 0, macs_total = 0;
  for (int i = 0; i < static_cast<int>(problems.size()); ++i) {
    const LinearParams& p = problems[i];
    if (p.m == 0) continue;
    const int panels = static_cast<int>(Panels(p));
    for (int m0 = 0; m0 < p.m; m0 += kItemRows) {
      const int m1 = std::min(p.m, m0 + kItemRows);
      for (int p0 = 0; p0 < panels; p0 += kItemPanels) {
        const int p1 = std::min(panels, p0 + kItemPanels);
        const int64_t macs = static_cast<int64_t>(m1 - m0) * (p1 - p0) * kPanelWidth * p.w.cols;
        const int64_t cost = ItemCost(m1 - m0, p1 - p0, p.w.cols, p.w.dtype);
        items.push_back({i, m0, m1, p0, p1, cost});
        total += cost;
        macs_total += macs;
      }
    }
  }
  if (items.empty()) return;
  if (macs_total < kSerialMacs || NumThreads() == 1) {
    for (const Item& it : items) k.gemm_block(problems[it.problem], it.m0, it.m1, it.p0, it.p1);
    return;
  }
  // Tasks of consecutive items and about equal cost, four per thread: task c takes the
  // items whose cost midpoint falls in [c, c + 1) * total / tasks.
  const int tasks = std::min<int>(4 * NumThreads(), items.size());
  std::vector<size_t> first(tasks + 1, items.size());
  int64_t before = 0;
  int c = 0;
  first[0] = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t mid = before + items[i].cost / 2;
    while (c + 1 < tasks && mid >= total * (c + 1) / tasks) first[++c] = i;
    before += items[i].cost;
  }
  for (int u = c + 1; u < tasks; ++u) first[u] = items.size();
  ParallelTasks(tasks, [&](int task) {
    for (size_t i = first[task]; i < first[task + 1]; ++i) {
      const Item& it = items[i];
      k.gemm_block(problems[it.problem], it.m0, it.m1, it.p0, it.p1);
    }
  });
}

// ------------------------------------------------------------------------------ packing

uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in fp32
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(value) | sign);
  }
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

namespace {

// Element i of a checkpoint tensor. safetensors promises no alignment (a tensor may
// start at an odd byte), so elements are read with memcpy, never through a typed pointer.
inline float SourceAt(const void* src, SourceType type, int64_t i) {
  const char* bytes = static_cast<const char*>(src);
  switch (type) {
    case SourceType::kF32: {
      float f;
      std::memcpy(&f, bytes + 4 * i, sizeof(f));
      return f;
    }
    case SourceType::kBF16:
    case SourceType::kF16: {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, sizeof(h));
      return type == SourceType::kBF16 ? Bf16ToFloat(h) : HalfToFloat(h);
    }
  }
  return 0.f;
}

// One source row into panel column c, widened or narrowed to T. The two common cases (the
// checkpoint already in the target dtype) are plain strided copies; loading a 13 GB
// checkpoint packs at memory speed.
template <typename T>
void PackRow(const void* src, SourceType type, int64_t K, int c, T* panel) {
  if constexpr (sizeof(T) == 2) {
    if (type == SourceType::kBF16) {
      // bf16 pairs (k, k + 1) move as one 32-bit word to word (k / 2) * 16 + c (bytes:
      // the source may be unaligned).
      const char* s = static_cast<const char*>(src);
      const int64_t pairs = K / 2;
      for (int64_t kp = 0; kp < pairs; ++kp) {
        uint32_t word;
        std::memcpy(&word, s + 4 * kp, sizeof(word));
        std::memcpy(panel + kp * 32 + 2 * c, &word, sizeof(word));
      }
      if (K % 2 == 1) {  // exact, NaN payloads kept
        std::memcpy(panel + pairs * 32 + 2 * c, s + 2 * (K - 1), sizeof(uint16_t));
      }
      return;
    }
    for (int64_t k = 0; k < K; ++k) {
      panel[(k / 2) * 32 + 2 * c + (k & 1)] = FloatToBf16(SourceAt(src, type, k));
    }
  } else {
    if (type == SourceType::kF32) {
      const char* s = static_cast<const char*>(src);
      for (int64_t k = 0; k < K; ++k) std::memcpy(panel + k * 16 + c, s + 4 * k, sizeof(float));
      return;
    }
    for (int64_t k = 0; k < K; ++k) panel[k * 16 + c] = SourceAt(src, type, k);
  }
}

template <typename T>
void PackTyped(std::span<const PackSource> sources, int64_t K, T* out) {
  int64_t rows = 0;
  for (const PackSource& s : sources) rows += s.rows;
  const int64_t panels = (rows + kPanelWidth - 1) / kPanelWidth;
  const int64_t kp = sizeof(T) == 2 ? (K + 1) / 2 * 2 : K;
  const int64_t panel_elems = kp * kPanelWidth;
  ParallelFor(panels, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* panel = out + p * panel_elems;
      std::memset(panel, 0, panel_elems * sizeof(T));
      for (int c = 0; c < kPanelWidth; ++c) {
        int64_t r = p * kPanelWidth + c;
        if (r >= rows) break;
        for (const PackSource& s : sources) {
          if (r < s.rows) {
            const size_t src_elem = s.type == SourceType::kF32 ? 4 : 2;
            PackRow<T>(static_cast<const char*>(s.data) + r * K * src_elem, s.type, K, c, panel);
            break;
          }
          r -= s.rows;
        }
      }
    }
  });
}

}  // namespace

void PackPanels(std::span<const PackSource> sources, int64_t K, DType dtype, void* out) {
  if (dtype == DType::kBF16) {
    PackTyped(sources, K, static_cast<uint16_t*>(out));
  } else {
    PackTyped(sources, K, static_cast<float*>(out));
  }
}

void ToFloat(const void* src, SourceType type, int64_t n, float* dst) {
  if (type == SourceType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = SourceAt(src, type, i);
}

void ConvertRows(const void* src, SourceType type, int64_t n, DType dtype, void* dst) {
  if (dtype == DType::kF32) {
    ToFloat(src, type, n, static_cast<float*>(dst));
    return;
  }
  uint16_t* out = static_cast<uint16_t*>(dst);
  if (type == SourceType::kBF16) {
    std::memcpy(out, src, n * sizeof(uint16_t));
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16(SourceAt(src, type, i));
}

}  // namespace moe::kernels::cpu
