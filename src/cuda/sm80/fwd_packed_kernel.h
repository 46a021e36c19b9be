// Forward for short queries (decode, a few speculative tokens): the query heads of a GQA group
// and the query rows, group * seqlen_q <= 16 of them, are packed into the rows of one 16-row
// tile, so each kv head's keys and values are read from memory once for the whole group (the
// row-block kernels read them once per query head, into 128-row tiles holding one live row).
// One block per (kv head, sequence, key split); its 4 warps take 16 keys each of every 64-key
// block that streams through kStages buffers of shared memory, keep their own online softmax, and
// merge at the end. With few kv heads x sequences the keys are split over blocks (split-K, as
// decode kernels do) and a second kernel merges the splits' partial states. Packed row r is
// query r / group of head kv_head * group + r % group. Runs on sm_80 and newer (the Hopper path
// sends these problems here too).
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/ptx.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

// Merge of n partial softmax states of one packed row, 8 output columns: source i holds the
// row's max m[i * stride] (exp2 domain), its sum l[i * stride] and its output sums
// o[i * stride * D ..] relative to that max. A source that saw nothing has m = -inf.
struct MergedRow {
  float mx, sum, o[8];
};

template <int D>
__device__ __forceinline__ MergedRow merge_rows(int n, const float* m, const float* l,
                                                const float* o, int64_t stride) {
  MergedRow r;
  r.mx = -INFINITY;
  r.sum = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) r.o[j] = 0.f;
  for (int i = 0; i < n; ++i) r.mx = fmaxf(r.mx, m[i * stride]);
  for (int i = 0; i < n; ++i) {
    const float mi = m[i * stride];
    if (mi == -INFINITY) continue;
    const float f = ptx::exp2f_approx(mi - r.mx);
    r.sum += l[i * stride] * f;
#pragma unroll
    for (int j = 0; j < 8; ++j) r.o[j] += o[i * stride * D + j] * f;
  }
  return r;
}

// Writes packed row r's final output columns [c, c + 8) (and its lse, from the thread of c 0).
template <typename T, int D>
__device__ __forceinline__ void store_row(const Params& p, const Sequence& seq, int64_t head_kv,
                                          int r, int c, const MergedRow& mg) {
  const float inv = mg.sum > 0.f ? 1.f / mg.sum : 0.f;  // 0: the row saw neither key nor sink
  uint4 packed;
  packed.x = ptx::pack2<T>(mg.o[0] * inv, mg.o[1] * inv);
  packed.y = ptx::pack2<T>(mg.o[2] * inv, mg.o[3] * inv);
  packed.z = ptx::pack2<T>(mg.o[4] * inv, mg.o[5] * inv);
  packed.w = ptx::pack2<T>(mg.o[6] * inv, mg.o[7] * inv);
  const int64_t qi = r / p.group, head = head_kv * p.group + r % p.group;
  *reinterpret_cast<uint4*>(static_cast<T*>(p.out.data) + seq.offset(p.out, true, qi, head) + c) =
      packed;
  if (c == 0 && p.lse != nullptr)
    p.lse[seq.lse_index(p, head, qi)] =
        mg.sum > 0.f ? (mg.mx + __log2f(mg.sum)) * 0.6931471805599453f : -INFINITY;
}

// Where the splits' partial states live in p.packed_partial: output sums, then maxima, then sums;
// row index (split * blocks + sequence * kv heads + kv head) * 16 + packed row.
template <int D>
struct PackedPartial {
  float *o, *m, *l;
  int64_t stride;  // rows between splits
  __device__ __forceinline__ PackedPartial(const Params& p) : stride(p.batch * p.heads_kv * PackedTile::kRows) {
    o = p.packed_partial;
    m = o + p.packed_splits * stride * D;
    l = m + p.packed_splits * stride;
  }
};

template <typename T, int D, int kStages>
__global__ void __launch_bounds__(PackedTile::kWarps * 32)
    fwd_packed_kernel(const __grid_constant__ Params p) {
  using PT = PackedTile;
  constexpr int BN = PT::kKeys, KW = PT::kWarpKeys, kThreads = PT::kWarps * 32;
  constexpr int kS = smem_stride(D), K16 = D / 16, NT_O = D / 8, kChunks = D / 8;
  static_assert(D <= PT::kMaxDim && KW == 16, "one k16 step of P V per warp and block");
  static_assert(PT::kWarps * PT::kRows * (2 + D) * 4 <= PT::bytes(D, kStages), "merge fits");
  static_assert(kStages >= 2 && PT::kRows <= 2 * BN, "q fits a stage");

  extern __shared__ __align__(16) char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // stage i: k [BN][kS], then v [BN][kS]
  auto k_of = [&](int i) { return sK + i * 2 * BN * kS; };
  T* sQ = k_of(kStages - 1);               // [16][kS] until the last stage's first load

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t head_kv = blockIdx.x, b = blockIdx.y;
  const int group = p.group;
  const Sequence seq(p, b);
  if (seq.len_q == 0) return;
  const int rows = (int)(seq.len_q * group);  // live packed rows
  const Mask mask = Mask::of(p, seq);
  int64_t key_lo, key_hi;
  mask.key_range(0, seq.len_q, key_lo, key_hi);
  // This split's share of the visible key blocks (split 0 also carries the sink).
  const int split = blockIdx.z, splits = gridDim.z;
  const int64_t kb_lo = key_lo / BN, kb_hi = key_hi > key_lo ? (key_hi + BN - 1) / BN : kb_lo;
  const int64_t chunk = (kb_hi - kb_lo + splits - 1) / splits;
  const int64_t n_first = min(kb_hi, kb_lo + split * chunk);
  const int64_t n_end = min(kb_hi, n_first + chunk);
  auto head_of = [&](int r) { return head_kv * group + r % group; };

  // The packed q rows (zero past the live ones).
  for (int idx = threadIdx.x; idx < PT::kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const T* q = static_cast<const T*>(p.q.data);
    const bool ok = r < rows;
    ptx::cp_async_16(sQ + r * kS + c * 8, ok ? q + seq.offset(p.q, true, r / group, head_of(r)) + c * 8 : q, ok);
  }
  const T* gK = static_cast<const T*>(p.k.data) + seq.offset(p.k, false, 0, head_kv);
  const T* gV = static_cast<const T*>(p.v.data) + seq.offset(p.v, false, 0, head_kv);
  auto load_kv = [&](int64_t nb, int buf) {
    const int64_t n0 = nb * BN;
    // Whole-line L2 fetches (H200, gptoss decode with 2 stages: B 64 x 8k +1.2-2.2%, B 16 x 8k
    // +1.2%; B 1 x 32k with 3 stages +3.2%).
    load_tile_async<BN, D, kThreads, true>(k_of(buf), gK + n0 * p.k.row_stride, p.k.row_stride,
                                           seq.len_k - n0);
    load_tile_async<BN, D, kThreads, true>(k_of(buf) + BN * kS, gV + n0 * p.v.row_stride,
                                           p.v.row_stride, seq.len_k - n0);
  };
  // One commit group per stage, loaded or not, so that the waits below count stages.
  ptx::cp_async_commit();
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (n_first + i < n_end) load_kv(n_first + i, i);
    ptx::cp_async_commit();
  }
  ptx::cp_async_wait<kStages - 1>();  // the q tile
  __syncthreads();
  uint32_t q_frag[K16][4];
#pragma unroll
  for (int kk = 0; kk < K16; ++kk) load_a(q_frag[kk], sQ, kS, 0, kk * 16, lane);

  // This thread's rows are g and g + 8 of the tile. The sink enters once per row: in warp 0.
  OnlineSoftmax<1, KW / 8, (D >= 128)> softmax;
  const int g = lane / 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
    const bool sink = p.sinks != nullptr && warp == 0 && split == 0 && r < rows;
    softmax.m[h] = sink ? p.sinks[head_of(r)] * 1.4426950408889634f : -INFINITY;
    softmax.l[h] = sink && lane % 4 == 0 ? 1.f : 0.f;
  }
  float acc_o[NT_O][4];
  zero(acc_o);

  for (int64_t nb = n_first; nb < n_end; ++nb) {
    const int j = (int)(nb - n_first), buf = j % kStages;
    ptx::cp_async_wait<kStages - 2>();  // key block nb
    __syncthreads();  // every warp is done with the buffer of nb - 1 (and q): prefetch into it
    if (nb + kStages - 1 < n_end) load_kv(nb + kStages - 1, (j + kStages - 1) % kStages);
    ptx::cp_async_commit();
    const T* k_tile = k_of(buf) + warp * KW * kS;
    const T* v_tile = k_of(buf) + (BN + warp * KW) * kS;
    const int64_t n0 = nb * BN + warp * KW;  // this warp's first key

    float s[1][KW / 8][4];
    zero(s);
    gemm_rs<true, K16>(s[0], q_frag, k_tile, kS, 0, lane);
    // Per-row masks (rows hold different queries); padding rows are never stored.
    if (!mask.all_visible(0, seq.len_q, n0, n0 + KW)) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = g + 8 * h;
        if (r >= rows) continue;
        int lo, hi;
        mask.row_bounds(r / group, n0, KW, lo, hi);
        mask_row(s[0], h, lo, hi, lane);
      }
    }
    float corr[2];
    if (softmax.update(s, p.scale_log2, corr))
      scale_rows(reinterpret_cast<float(&)[1][NT_O][4]>(acc_o), corr);
    uint32_t p_frag[1][4];
    acc_to_a<1, T>(p_frag, s[0]);
    gemm_rs<false, 1>(acc_o, p_frag, v_tile, kS, 0, lane);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the k/v buffers become the merge area

  // Merge the warps' softmax states (and, with splits, leave the block's for the combine).
  float* m_all = reinterpret_cast<float*>(sK);     // [warps][16]
  float* l_all = m_all + PT::kWarps * PT::kRows;   // [warps][16]
  float* o_all = l_all + PT::kWarps * PT::kRows;   // [warps][16][D]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = softmax.l[h];
    l += __shfl_xor_sync(0xffffffff, l, 1);
    l += __shfl_xor_sync(0xffffffff, l, 2);
    const int r = warp * PT::kRows + g + 8 * h;
    if (lane % 4 == 0) {
      m_all[r] = softmax.m[h];
      l_all[r] = l;
    }
#pragma unroll
    for (int n = 0; n < NT_O; ++n) {
      float* dst = o_all + r * D + n * 8 + 2 * (lane % 4);
      dst[0] = acc_o[n][2 * h];
      dst[1] = acc_o[n][2 * h + 1];
    }
  }
  __syncthreads();
  const PackedPartial<D> part(p);
  const int64_t row_base = (split * p.batch + b) * p.heads_kv * PT::kRows + head_kv * PT::kRows;
  for (int idx = threadIdx.x; idx < rows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const MergedRow mg = merge_rows<D>(PT::kWarps, m_all + r, l_all + r, o_all + r * D + c, PT::kRows);
    if (splits == 1) {
      store_row<T, D>(p, seq, head_kv, r, c, mg);
      continue;
    }
    float* o = part.o + (row_base + r) * D + c;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = mg.o[j];
    if (c == 0) {
      part.m[row_base + r] = mg.mx;
      part.l[row_base + r] = mg.sum;
    }
  }
}

// Merges the key splits of fwd_packed_kernel: one block per (kv head, sequence).
template <typename T, int D>
__global__ void __launch_bounds__(128) fwd_packed_combine_kernel(const __grid_constant__ Params p) {
  constexpr int kChunks = D / 8;
  const int64_t head_kv = blockIdx.x, b = blockIdx.y;
  const Sequence seq(p, b);
  const int rows = (int)(seq.len_q * p.group);
  const PackedPartial<D> part(p);
  const int64_t row_base = (b * p.heads_kv + head_kv) * PackedTile::kRows;
  for (int idx = threadIdx.x; idx < rows * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int64_t i = row_base + r;
    store_row<T, D>(p, seq, head_kv, r, c,
                    merge_rows<D>(p.packed_splits, part.m + i, part.l + i, part.o + i * D + c, part.stride));
  }
}

}  // namespace sinkattn::cuda::sm80
