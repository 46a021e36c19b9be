// Hopper deterministic dq kernel (sm_90a): one block per (128 query rows, query head, sequence)
// walks the key blocks its rows can see, in order, like the forward:
//   S = Q K^T, dP = dO V^T (wgmma, shared operands, one commit group each; P = exp2(S scale -
//   lse2) runs while dP is still on the tensor cores), dS = P (dP - delta), dQ += dS K (wgmma,
//   dS from registers).
// Every dq element is summed by one thread in key order: bit-identical run to run, and no fp32
// accumulator, zeroing or conversion. Warpgroup 0's first thread produces: the q and dout tiles
// once, then k and v per key block into a ring of stages (TMA, completing on mbarriers); v goes
// back after dP, k after dQ. Consumer warpgroups 1 and 2 own 64 query rows each.
// It replaces the portable dq kernel in the Hopper backward's deterministic mode (whose dK / dV
// come from bwd_kernel.h without its dQ reductions).
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>

#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/query_block.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

// Shared memory of the dq kernel, in bytes from a 1024-byte aligned base.
template <int D>
struct DqSmem {
  static constexpr DqTile kT = dq_tile(D);
  static constexpr int kQBytes = kT.block_m * D * 2;   // q or dout
  static constexpr int kKVBytes = kT.block_n * D * 2;  // one k or v stage
  static constexpr int kStage = sm80::smem_stride(D);  // epilogue staging row (elements)
  static constexpr int q = 0;
  static constexpr int dout = q + kQBytes;
  static constexpr int k = dout + kQBytes;             // [stages]
  static constexpr int v = k + kT.stages * kKVBytes;   // [stages]
  static constexpr int o = v + kT.stages * kKVBytes;   // 16 staging rows per consumer warp
  static constexpr int bars = o + kT.consumers * 4 * 16 * kStage * 2;
  static constexpr int kBars = 1 + 4 * kT.stages;      // q_full; k, v: full and empty
  static constexpr int bytes = bars + kBars * 8 + 1024;
};

template <typename T, int D>
__global__ void __launch_bounds__((dq_tile(D).consumers + 1) * 128, 1)
    bwd_dq_kernel(const __grid_constant__ sm80::Params p, const __grid_constant__ CUtensorMap map_q,
                  const __grid_constant__ CUtensorMap map_k, const __grid_constant__ CUtensorMap map_v,
                  const __grid_constant__ CUtensorMap map_dout) {
  using L = DqSmem<D>;
  constexpr DqTile kT = L::kT;
  constexpr int BM = kT.block_m, BN = kT.block_n, S = kT.stages, kSub = D / 64;
  constexpr int kConsumerThreads = kT.consumers * 128;
  static_assert(BM == 64 * kT.consumers, "64 query rows per consumer");

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + L::bars);
  uint64_t* q_full = bars;
  uint64_t* k_full = bars + 1;
  uint64_t* v_full = k_full + S;
  uint64_t* k_empty = v_full + S;
  uint64_t* v_empty = k_empty + S;

  const sm80::QueryBlock qb = sm80::QueryBlock::of<BM, BN, int>(p);  // heaviest blocks first
  if (qb.empty()) return;
  const int64_t head = qb.head, m0 = qb.m0;
  const sm80::Sequence& seq = qb.seq;
  const sm80::Mask& mask = qb.mask;
  const int n_first = (int)qb.n_first, n_end = (int)qb.n_end;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init_ring(k_full, k_empty, S, kConsumerThreads);
    mbar_init_ring(v_full, v_empty, S, kConsumerThreads);
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = __shfl_sync(0xffffffff, (int)threadIdx.x / 128, 0);
  if (wg == 0) {
    regs_dealloc<kT.producer_regs>();
    if (threadIdx.x != 0) return;
    // Packed (varlen) tensors are one batch entry; rows are offset by the sequence start.
    const int bq = seq.varlen ? 0 : (int)seq.b, rq = (int)(seq.varlen ? seq.row_q : 0);
    const int rk = (int)(seq.varlen ? seq.row_k : 0), hk = (int)(head / p.group);
    tma_prefetch_desc(&map_k);
    tma_prefetch_desc(&map_v);
    mbar_expect_tx(q_full, 2 * L::kQBytes);
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub) {
      tma_load_4d(base + L::q + sub * BM * 128, &map_q, q_full, 64 * sub, rq + (int)m0, (int)head, bq);
      tma_load_4d(base + L::dout + sub * BM * 128, &map_dout, q_full, 64 * sub, rq + (int)m0,
                  (int)head, bq);
    }
    // The forward's KvRing::fill does the same; used here it cost the deterministic d 64
    // backward 2.5-4% (H200, ptxas allocated the consumers' loop differently).
    for (int n = n_first; n < n_end; ++n) {
      const int i = n - n_first, s = i % S;
      const uint32_t phase = (i / S) & 1;
      if (i >= S) mbar_wait(&k_empty[s], phase ^ 1);
      mbar_expect_tx(&k_full[s], L::kKVBytes);
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub)
        tma_load_4d(base + L::k + s * L::kKVBytes + sub * BN * 128, &map_k, &k_full[s], 64 * sub,
                    rk + n * BN, hk, bq);
      if (i >= S) mbar_wait(&v_empty[s], phase ^ 1);
      mbar_expect_tx(&v_full[s], L::kKVBytes);
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub)
        tma_load_4d(base + L::v + s * L::kKVBytes + sub * BN * 128, &map_v, &v_full[s], 64 * sub,
                    rk + n * BN, hk, bq);
    }
    return;
  }

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1;  // query rows 64c .. 64c + 63 of the block
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int64_t row0 = m0 + 64 * c, warp_row = row0 + 16 * warp;
  // This thread's rows warp_row + g (+ 8): lse2 (+inf past the end, so P = 0 there: TMA fills
  // rows past a packed sequence's end with the next one's) and delta.
  float lse2[2], delta[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) seq.lse2_delta(p, head, warp_row + lane / 4 + 8 * h, lse2[h], delta[h]);
  const T* sQ = reinterpret_cast<const T*>(base + L::q + c * 64 * 128);
  const T* sdO = reinterpret_cast<const T*>(base + L::dout + c * 64 * 128);
  float acc_dq[D / 8][4];
  sm80::zero(acc_dq);
  mbar_wait(q_full, 0);

  for (int n = n_first; n < n_end; ++n) {
    const int i = n - n_first, s = i % S;
    const uint32_t phase = (i / S) & 1;
    const T* sK = reinterpret_cast<const T*>(base + L::k + s * L::kKVBytes);
    const T* sV = reinterpret_cast<const T*>(base + L::v + s * L::kKVBytes);
    float sc[1][BN / 8][4], dp[BN / 8][4];
    mbar_wait(&k_full[s], phase);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      mma_ss<0, 0>(sc[0], kmajor_desc(sQ, kk, BM * 128), kmajor_desc(sK, kk, BN * 128), kk > 0, T{});
    wgmma_commit();
    mbar_wait(&v_full[s], phase);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      mma_ss<0, 0>(dp, kmajor_desc(sdO, kk, BM * 128), kmajor_desc(sV, kk, BN * 128), kk > 0, T{});
    wgmma_commit();

    // P while dP runs; masked scores are -inf, so P = 0 there.
    wgmma_wait<1>();
    pin(sc[0]);
    const int64_t n0 = (int64_t)n * BN;
    if (!mask.all_visible(row0, row0 + 64, n0, n0 + BN)) sm80::apply_mask(sc, mask, warp_row, n0, lane);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        sc[0][j][e] = ptx::exp2f_approx(fmaf(sc[0][j][e], p.scale_log2, -lse2[e / 2]));
    wgmma_wait<0>();
    pin(dp);
    mbar_arrive(&v_empty[s]);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[j][e] = sc[0][j][e] * (dp[j][e] - delta[e / 2]);  // dS
    uint32_t dsf[BN / 16][4];
    sm80::acc_to_a<BN / 16, T>(dsf, dp);

    // dQ += dS K: K is the N-major B operand (keys along K), as V is in the forward's P V.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
      mma_rs<1>(acc_dq, dsf[kk], nmajor_desc(sK, kk, BN * 128), 1, T{});
    wgmma_commit();
    wgmma_wait<0>();
    pin(acc_dq);
    pin(dsf);
    mbar_arrive(&k_empty[s]);
  }

  // Epilogue: dq (scaled) through this warp's staging rows, 16 bytes at a time.
  T* stage = reinterpret_cast<T*>(base + L::o) + (c * 4 + warp) * 16 * L::kStage;
  sm80::stage_acc<D / 8, T>(stage, L::kStage, acc_dq, p.scale, lane);
  __syncwarp();
  sm80::store_rows16<D>(static_cast<T*>(p.dq.data) + seq.offset(p.dq, true, warp_row, head),
                        p.dq.row_stride, stage, seq.len_q - warp_row, lane);
}

}  // namespace sinkattn::cuda::sm90
