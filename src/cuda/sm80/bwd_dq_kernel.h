// Backward, deterministic dq kernel: one block per (query block, query head, sequence), each
// warp owning 16 query rows, walking the visible key blocks like the forward:
//   S = Q K^T, dP = dO V^T, dS = P (dP - delta), dQ += dS K.
// No atomics: every dq element is summed by one thread in a fixed order.
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
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

template <typename T, int D>
__global__ void __launch_bounds__(tile_size(Kernel::kBwdDq, D).warps * 32,
                                  tile_size(Kernel::kBwdDq, D).min_blocks)
    bwd_dq_kernel(const __grid_constant__ Params p) {
  constexpr TileSize kT = tile_size(Kernel::kBwdDq, D);
  constexpr int BM = kT.block_m, BN = kT.block_n, kThreads = kT.warps * 32;
  constexpr int MT = kT.m_tiles;
  constexpr int kS = smem_stride(D);
  constexpr int K16 = D / 16, NT_S = BN / 8, NT_Q = D / 8;
  static_assert(BM == 16 * MT * kT.warps, "warps own MT * 16 query rows each");

  extern __shared__ __align__(16) char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + BM * kS;
  T* sK = sdO + BM * kS;     // [2][BN][kS]
  T* sV = sK + 2 * BN * kS;  // [2][BN][kS]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const QueryBlock qb = QueryBlock::of<BM, BN>(p);
  if (qb.empty()) return;
  const Sequence& seq = qb.seq;
  const Mask& mask = qb.mask;
  const int64_t head = qb.head, head_kv = qb.head_kv, m0 = qb.m0, n_first = qb.n_first, n_end = qb.n_end;

  load_tile_async<BM, D, kThreads>(sQ, static_cast<const T*>(p.q.data) +
                                           seq.offset(p.q, true, m0, head),
                                   p.q.row_stride, seq.len_q - m0);
  load_tile_async<BM, D, kThreads>(sdO, static_cast<const T*>(p.dout.data) +
                                            seq.offset(p.dout, true, m0, head),
                                   p.dout.row_stride, seq.len_q - m0);
  ptx::cp_async_commit();
  const T* gK = static_cast<const T*>(p.k.data) + seq.offset(p.k, false, 0, head_kv);
  const T* gV = static_cast<const T*>(p.v.data) + seq.offset(p.v, false, 0, head_kv);
  auto load_kv = [&](int64_t nb, int buf) {
    const int64_t n0 = nb * BN;
    load_tile_async<BN, D, kThreads>(sK + buf * BN * kS, gK + n0 * p.k.row_stride,
                                     p.k.row_stride, seq.len_k - n0);
    load_tile_async<BN, D, kThreads>(sV + buf * BN * kS, gV + n0 * p.v.row_stride,
                                     p.v.row_stride, seq.len_k - n0);
  };
  if (n_first < n_end) load_kv(n_first, 0);
  ptx::cp_async_commit();

  // This thread's rows (r = 2 * m-tile + half): lse in the exp2 domain (+inf for rows that see
  // nothing, so P = 0) and delta.
  const int row0 = warp * 16 * MT, g = lane / 4;
  float lse2[2 * MT], delta[2 * MT];
#pragma unroll
  for (int r = 0; r < 2 * MT; ++r)
    seq.lse2_delta(p, head, m0 + row0 + (r / 2) * 16 + (r % 2) * 8 + g, lse2[r], delta[r]);

  uint32_t q_frag[MT][kT.q_in_regs ? K16 : 1][4], do_frag[MT][kT.q_in_regs ? K16 : 1][4];
  ptx::cp_async_wait<1>();  // q and dout
  __syncthreads();
  if constexpr (kT.q_in_regs) {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int kk = 0; kk < K16; ++kk) {
        load_a(q_frag[m][kk], sQ, kS, row0 + 16 * m, kk * 16, lane);
        load_a(do_frag[m][kk], sdO, kS, row0 + 16 * m, kk * 16, lane);
      }
  }
  float acc_dq[MT][NT_Q][4];
  zero(acc_dq);

  for (int64_t nb = n_first; nb < n_end; ++nb) {
    // One barrier per key block: once every warp has passed it, the buffer of the previous
    // block is free for the prefetch, which then overlaps this block's math.
    const int buf = (int)((nb - n_first) % 2);
    ptx::cp_async_wait<0>();
    __syncthreads();
    if (nb + 1 < n_end) {
      load_kv(nb + 1, buf ^ 1);
      ptx::cp_async_commit();
    }
    const T* k_tile = sK + buf * BN * kS;
    const T* v_tile = sV + buf * BN * kS;

    const int64_t n0 = nb * BN;
    float s[MT][NT_S][4], dp[MT][NT_S][4];
    zero(s);
    zero(dp);
    if constexpr (kT.q_in_regs) {
      gemm_rs<true, K16>(s, q_frag, k_tile, kS, 0, lane);
      gemm_rs<true, K16>(dp, do_frag, v_tile, kS, 0, lane);
    } else {
      gemm_ss<true, K16>(s, sQ, kS, row0, k_tile, kS, 0, lane);
      gemm_ss<true, K16>(dp, sdO, kS, row0, v_tile, kS, 0, lane);
    }
    if (!mask.all_visible(m0, m0 + BM, n0, n0 + BN)) apply_mask(s, mask, m0 + row0, n0, lane);
    uint32_t ds_frag[MT][BN / 16][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int n = 0; n < NT_S; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = 2 * m + e / 2;
          const float pe = ptx::exp2f_approx(fmaf(s[m][n][e], p.scale_log2, -lse2[r]));
          s[m][n][e] = pe * (dp[m][n][e] - delta[r]);  // dS
        }
      acc_to_a<BN / 16, T>(ds_frag[m], s[m]);
    }
    gemm_rs<false, BN / 16>(acc_dq, ds_frag, k_tile, kS, 0, lane);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();

#pragma unroll
  for (int m = 0; m < MT; ++m) {
    T* stage = sQ + (row0 + 16 * m) * kS;
    stage_acc<NT_Q, T>(stage, kS, acc_dq[m], p.scale, lane);
    __syncwarp();
    store_rows16<D>(static_cast<T*>(p.dq.data) + seq.offset(p.dq, true, m0 + row0 + 16 * m, head),
                    p.dq.row_stride, stage, seq.len_q - m0 - row0 - 16 * m, lane);
  }
}

}  // namespace sinkattn::cuda::sm80
