// Forward kernel (FlashAttention-2 style): one block per (query block, query head, sequence);
// each warp owns MT * 16 query rows; k/v tiles stream through double-buffered shared memory
// (cp.async) over only the key blocks the mask lets the query block see.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/ptx.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/query_block.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

template <typename T, int D, bool kLarge>
__global__ void __launch_bounds__(tile_size(Kernel::kFwd, D, kLarge).warps * 32,
                                  tile_size(Kernel::kFwd, D, kLarge).min_blocks)
    fwd_kernel(const __grid_constant__ Params p) {
  constexpr TileSize kT = tile_size(Kernel::kFwd, D, kLarge);
  constexpr int BM = kT.block_m, BN = kT.block_n, kThreads = kT.warps * 32;
  constexpr int MT = kT.m_tiles;  // 16-row m-tiles per warp
  constexpr int kS = smem_stride(D);
  constexpr int K16 = D / 16;    // k-steps of Q K^T
  constexpr int NT_S = BN / 8;   // n-tiles of a warp's score tile
  constexpr int NT_O = D / 8;    // n-tiles of a warp's output tile
  static_assert(BM == 16 * MT * kT.warps, "warps own MT * 16 query rows each");

  extern __shared__ __align__(16) char smem_raw[];
  // The q tile may be staged where the k/v buffers live, before they fill (see tile_size.h).
  constexpr bool kAlias = fwd_q_aliases_kv(D, kLarge);
  T* sK = reinterpret_cast<T*>(smem_raw) + (kAlias ? 0 : BM * kS);  // [2][BN][kS]
  T* sV = sK + 2 * BN * kS;                                                // [2][BN][kS]
  T* sQ = reinterpret_cast<T*>(smem_raw);

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const QueryBlock qb = QueryBlock::of<BM, BN>(p);
  if (qb.empty()) return;
  const Sequence& seq = qb.seq;
  const Mask& mask = qb.mask;
  const int64_t head = qb.head, head_kv = qb.head_kv, m0 = qb.m0, n_first = qb.n_first, n_end = qb.n_end;

  const T* gQ = static_cast<const T*>(p.q.data) + seq.offset(p.q, true, m0, head);
  const T* gK = static_cast<const T*>(p.k.data) + seq.offset(p.k, false, 0, head_kv);
  const T* gV = static_cast<const T*>(p.v.data) + seq.offset(p.v, false, 0, head_kv);

  load_tile_async<BM, D, kThreads>(sQ, gQ, p.q.row_stride, seq.len_q - m0);
  ptx::cp_async_commit();
  const int row0 = warp * 16 * MT;
  auto load_kv = [&](int64_t nb, int buf) {
    const int64_t n0 = nb * BN;
    load_tile_async<BN, D, kThreads>(sK + buf * BN * kS, gK + n0 * p.k.row_stride,
                                     p.k.row_stride, seq.len_k - n0);
    load_tile_async<BN, D, kThreads>(sV + buf * BN * kS, gV + n0 * p.v.row_stride,
                                     p.v.row_stride, seq.len_k - n0);
  };
  if (!kAlias && n_first < n_end) load_kv(n_first, 0);  // in flight with the q tile
  ptx::cp_async_commit();
  uint32_t q_frag[MT][kT.q_in_regs ? K16 : 1][4];
  if constexpr (kT.q_in_regs) {
    ptx::cp_async_wait<1>();  // the q tile
    __syncthreads();
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int kk = 0; kk < K16; ++kk) load_a(q_frag[m][kk], sQ, kS, row0 + 16 * m, kk * 16, lane);
  }
  if constexpr (kAlias) {
    __syncthreads();  // the k/v loads below overwrite the q tile
    if (n_first < n_end) load_kv(n_first, 0);
    ptx::cp_async_commit();
  }

  OnlineSoftmax<MT, NT_S, (D >= 128)> softmax;
  softmax.init(p.sinks, (int)head, lane);
  float acc_o[MT][NT_O][4];
  zero(acc_o);

  for (int64_t nb = n_first; nb < n_end; ++nb) {
    // One barrier per key block: once every warp has passed it, the buffer of the previous
    // block is free for the prefetch below, which then overlaps this block's math.
    const int buf = (int)((nb - n_first) % 2);
    ptx::cp_async_wait<0>();
    __syncthreads();
    const T* k_tile = sK + buf * BN * kS;
    const T* v_tile = sV + buf * BN * kS;

    const int64_t n0 = nb * BN;
    float s[MT][NT_S][4];
    zero(s);
    if constexpr (kT.q_in_regs)
      gemm_rs<true, K16>(s, q_frag, k_tile, kS, 0, lane);
    else
      gemm_ss<true, K16>(s, sQ, kS, row0, k_tile, kS, 0, lane);
    // The prefetch: the next block's copies, issued while the tensor cores work on S.
    if (nb + 1 < n_end) {
      load_kv(nb + 1, buf ^ 1);
      ptx::cp_async_commit();
    }
    if (!mask.all_visible(m0, m0 + BM, n0, n0 + BN)) apply_mask(s, mask, m0 + row0, n0, lane);

    float corr[2 * MT];
    if (softmax.update(s, p.scale_log2, corr)) scale_rows(acc_o, corr);
    uint32_t p_frag[MT][BN / 16][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) acc_to_a<BN / 16, T>(p_frag[m], s[m]);
    gemm_rs<false, BN / 16>(acc_o, p_frag, v_tile, kS, 0, lane);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();

  float inv[2 * MT], lse[2 * MT];
  softmax.finish(inv, lse);
  scale_rows(acc_o, inv);
  const int64_t rows_left = seq.len_q - m0 - row0;
  if (p.lse != nullptr && lane % 4 == 0) {
#pragma unroll
    for (int r = 0; r < 2 * MT; ++r) {
      const int row = (r / 2) * 16 + (r % 2) * 8 + lane / 4;
      if (row < rows_left) p.lse[seq.lse_index(p, head, m0 + row0 + row)] = lse[r];
    }
  }
  // Stage the warp's rows in its own slice of the q tile (or the idle k/v buffers), then
  // store 16 bytes at a time.
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    T* stage = sQ + (row0 + 16 * m) * kS;
    stage_acc<NT_O, T>(stage, kS, acc_o[m], 1.f, lane);
    __syncwarp();
    T* gO = static_cast<T*>(p.out.data) + seq.offset(p.out, true, m0 + row0 + 16 * m, head);
    store_rows16<D>(gO, p.out.row_stride, stage, rows_left - 16 * m, lane);
  }
}

}  // namespace sinkattn::cuda::sm80
