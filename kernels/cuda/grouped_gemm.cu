// The expert FFN with the plan on the device: no host read-back of expert_offsets, so a
// step's MoE layers issue without a host synchronization and a decode step can be
// captured as a CUDA graph (DESIGN.md section 3). bf16 weights, bf16 gathered rows, fp32
// accumulation on the tensor cores (WMMA 16x16x16), fp32 outputs.
//
// 1. TilePlanKernel (one thread): the row tiles of the plan, (expert, first row) for
//    every BM rows of every expert with rows, in expert order, and their count.
// 2. Gather and SiLU·mul over the plan's rows (offsets[E], read on the device).
// 3. GroupedGemmKernel: block (column tile, row tile); tiles past the count exit. Each
//    stages a BM x BK tile of the rows and a BN x BK tile of its expert's weight in
//    shared memory and accumulates BM x BN with four warps of 2 x 2 WMMA fragments.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ffn_rows.cuh"
#include "kernels/cuda/moe_cuda.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kBM = 64;            // rows of a tile
constexpr int kBN = 64;            // output columns of a tile
constexpr int kBK = 32;            // reduction step
constexpr int kPad = 8;            // bf16 elements of padding per shared-memory row (bank spread)
constexpr int kGemmThreads = 128;  // four warps, each 32 x 32 of the tile
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 16;

int BlocksFor(int64_t n) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks)));
}

// The row tiles of the plan, at most MaxTiles(P, E) of them.
__global__ void TilePlanKernel(const int32_t* __restrict__ offsets, int num_experts,
                               int32_t* __restrict__ tile_expert, int32_t* __restrict__ tile_row,
                               int32_t* __restrict__ num_tiles) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int n = 0;
  for (int e = 0; e < num_experts; ++e) {
    for (int r = offsets[e]; r < offsets[e + 1]; r += kBM) {
      tile_expert[n] = e;
      tile_row[n] = r;
      ++n;
    }
  }
  *num_tiles = n;
}

// C[r, n] = sum_k A[r, k] W_e[n, k] for the tile's rows r in [r0, min(r0 + BM, end of e))
// and columns n in [n0, n0 + BN) ∩ [0, N). A [rows, K] and W_e [N, K] are bf16 row-major,
// K a multiple of 8 (16-byte loads); C fp32 with leading dimension N.
__global__ void __launch_bounds__(kGemmThreads)
    GroupedGemmKernel(const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* const* weights,
                      int n_cols, int k_dim, float* __restrict__ c,
                      const int32_t* __restrict__ offsets, const int32_t* __restrict__ tile_expert,
                      const int32_t* __restrict__ tile_row, const int32_t* __restrict__ num_tiles) {
  namespace wmma = nvcuda::wmma;
  const int tile = blockIdx.y;
  if (tile >= *num_tiles) return;
  const int e = tile_expert[tile];
  const int r0 = tile_row[tile];
  const int r_end = min(offsets[e + 1], r0 + kBM);
  const int n0 = blockIdx.x * kBN;
  const __nv_bfloat16* w = weights[e];

  __shared__ __align__(32) __nv_bfloat16 sa[kBM][kBK + kPad];
  __shared__ __align__(32) __nv_bfloat16 sw[kBN][kBK + kPad];
  __shared__ __align__(32) float sc[kBM][kBN + 4];

  const int warp = threadIdx.x / 32;
  const int wm = (warp / 2) * 32;  // the warp's 32 x 32 of the tile
  const int wn = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  }

  // Each thread loads 8 bf16 (16 bytes) of each tile per pass: 64 rows x 32 = 2048
  // elements = 256 loads of 8, two per thread.
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int k0 = 0; k0 < k_dim; k0 += kBK) {
    for (int l = threadIdx.x; l < kBM * kBK / 8; l += kGemmThreads) {
      const int row = l / (kBK / 8);
      const int col = (l % (kBK / 8)) * 8;
      const int k = k0 + col;
      const int r = r0 + row;
      uint4 va = zero;
      if (r < r_end && k < k_dim) {
        va = *reinterpret_cast<const uint4*>(a + static_cast<int64_t>(r) * k_dim + k);
      }
      *reinterpret_cast<uint4*>(&sa[row][col]) = va;
      const int n = n0 + row;
      uint4 vw = zero;
      if (n < n_cols && k < k_dim) {
        vw = *reinterpret_cast<const uint4*>(w + static_cast<int64_t>(n) * k_dim + k);
      }
      *reinterpret_cast<uint4*>(&sw[row][col]) = vw;
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      // B(k, n) = W(n, k): the staged weight rows are B's columns.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[2];
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], &sa[wm + 16 * i][kk], kBK + kPad);
        wmma::load_matrix_sync(fb[i], &sw[wn + 16 * i][kk], kBK + kPad);
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(&sc[wm + 16 * i][wn + 16 * j], acc[i][j], kBN + 4,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int l = threadIdx.x; l < kBM * kBN; l += kGemmThreads) {
    const int row = l / kBN;
    const int col = l % kBN;
    const int r = r0 + row;
    const int n = n0 + col;
    if (r < r_end && n < n_cols) c[static_cast<int64_t>(r) * n_cols + n] = sc[row][col];
  }
}

}  // namespace

int DevicePlanScratch::MaxTiles(int64_t pairs, int num_experts) {
  return static_cast<int>((pairs + kBM - 1) / kBM + num_experts);
}

absl::StatusOr<const void* const*> DevicePlanScratch::WeightTable(const ExpertFfnParams& p) {
  const int E = p.num_experts;
  std::vector<const void*> ptrs(2 * static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    ptrs[e] = p.w_gate_up[e].data;
    ptrs[E + e] = p.w_down[e].data;
  }
  Table& t = tables_[p.w_gate_up];
  if (t.host != ptrs) {
    // A blocking copy, made once per layer for resident experts (their pointers never
    // change), so the steady state issues no copy and can be captured.
    absl::StatusOr<DeviceBuffer<const void*>> d = DeviceBuffer<const void*>::Create(ptrs.size());
    if (!d.ok()) return d.status();
    if (absl::Status s = d->CopyFromHost(ptrs); !s.ok()) return s;
    t.device = *std::move(d);
    t.host = std::move(ptrs);
    ++generation_;
  }
  return t.device.data();
}

absl::StatusOr<int32_t*> DevicePlanScratch::Tiles(int max_tiles) {
  if (max_tiles > max_tiles_) {
    absl::StatusOr<DeviceBuffer<int32_t>> tiles =
        DeviceBuffer<int32_t>::Create(2 * static_cast<size_t>(max_tiles) + 1);
    if (!tiles.ok()) return tiles.status();
    tiles_ = *std::move(tiles);
    max_tiles_ = max_tiles;
    ++generation_;
  }
  return tiles_.data();
}

absl::Status CanImplementDevicePlan(const ExpertFfnParams& p) {
  if (p.x == nullptr || p.sorted_pairs == nullptr || p.expert_offsets == nullptr ||
      p.w_gate_up == nullptr || p.w_down == nullptr || p.ws_x == nullptr ||
      p.ws_gate_up == nullptr || p.ws_act == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("expert_ffn: null buffer");
  }
  if (p.hidden < 8 || p.inter < 8 || p.hidden % 8 != 0 || p.inter % 8 != 0 || p.top_k < 1 ||
      p.num_experts < 1 || p.num_experts > kMaxExperts || p.num_tokens < 0) {
    return absl::UnimplementedError(
        "expert_ffn (device plan): H and I must be positive multiples of 8");
  }
  if (static_cast<int64_t>(p.num_tokens) * p.top_k > INT32_MAX / 2) {
    return absl::InvalidArgumentError("expert_ffn: T*K overflows int32");
  }
  // Every expert is checked: the plan is on the device, so any of them may get rows.
  for (int e = 0; e < p.num_experts; ++e) {
    const MatrixRef& gu = p.w_gate_up[e];
    const MatrixRef& dn = p.w_down[e];
    if (gu.data == nullptr || dn.data == nullptr || gu.dtype != DType::kBF16 ||
        dn.dtype != DType::kBF16 || gu.layout != WeightLayout::kRowMajor ||
        dn.layout != WeightLayout::kRowMajor) {
      return absl::UnimplementedError(absl::StrFormat(
          "expert_ffn (device plan): expert %d: needs resident bf16 row-major weights", e));
    }
    if (gu.rows != 2 * p.inter || gu.cols != p.hidden || dn.rows != p.hidden ||
        dn.cols != p.inter) {
      return absl::InvalidArgumentError(
          absl::StrFormat("expert_ffn: expert %d's weights are not [2I, H] and [H, I]", e));
    }
  }
  return absl::OkStatus();
}

absl::Status LaunchExpertFfnDevicePlan(const ExpertFfnParams& p, DevicePlanScratch& scratch,
                                       cudaStream_t stream) {
  if (absl::Status s = CanImplementDevicePlan(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  const int E = p.num_experts, H = p.hidden, I = p.inter;
  const int64_t pairs = static_cast<int64_t>(p.num_tokens) * p.top_k;
  const int max_tiles = DevicePlanScratch::MaxTiles(pairs, E);
  absl::StatusOr<const void* const*> table = scratch.WeightTable(p);
  if (!table.ok()) return table.status();
  absl::StatusOr<int32_t*> tiles = scratch.Tiles(max_tiles);
  if (!tiles.ok()) return tiles.status();
  auto* const* w_gu = reinterpret_cast<const __nv_bfloat16* const*>(*table);
  auto* const* w_dn = w_gu + E;
  int32_t* tile_expert = *tiles;
  int32_t* tile_row = tile_expert + max_tiles;
  int32_t* num_tiles = tile_row + max_tiles;

  TilePlanKernel<<<1, 1, 0, stream>>>(p.expert_offsets, E, tile_expert, tile_row, num_tiles);
  MOE_CUDA_CHECK_LAUNCH(stream);
  auto* x_bf16 = reinterpret_cast<__nv_bfloat16*>(p.ws_x);
  auto* act_bf16 = reinterpret_cast<__nv_bfloat16*>(p.ws_act);
  const RowCount rows{0, p.expert_offsets + E};
  GatherRowsKernel<<<BlocksFor(pairs * H), kThreads, 0, stream>>>(p.x, p.sorted_pairs, rows,
                                                                  p.top_k, H, x_bf16);
  MOE_CUDA_CHECK_LAUNCH(stream);
  const dim3 grid_gu((2 * I + kBN - 1) / kBN, max_tiles);
  GroupedGemmKernel<<<grid_gu, kGemmThreads, 0, stream>>>(
      x_bf16, w_gu, 2 * I, H, p.ws_gate_up, p.expert_offsets, tile_expert, tile_row, num_tiles);
  MOE_CUDA_CHECK_LAUNCH(stream);
  SiluMulRowsKernel<<<BlocksFor(pairs * I), kThreads, 0, stream>>>(p.ws_gate_up, rows, I, act_bf16);
  MOE_CUDA_CHECK_LAUNCH(stream);
  const dim3 grid_dn((H + kBN - 1) / kBN, max_tiles);
  GroupedGemmKernel<<<grid_dn, kGemmThreads, 0, stream>>>(
      act_bf16, w_dn, H, I, p.y, p.expert_offsets, tile_expert, tile_row, num_tiles);
  MOE_CUDA_CHECK_LAUNCH(stream);
  MOE_CUDA_DEBUG_SYNC(stream);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
