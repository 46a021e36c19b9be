// Hopper backward dK/dV kernel (sm_90a), with dQ accumulated by TMA reductions: one block per
// (128 keys, kv head, sequence). Warpgroup 0's first warp produces: K and V once, then for every
// (query head of the GQA group, query block) that can see the keys, Q and dO through TMA and
// lse / delta rows into a ring of stages. Consumer warpgroups 1 and 2 own 64 keys each for dK
// and dV, kept in registers across the whole walk (so GQA needs no dK/dV reduction).
// Key split (d 128, 64-query steps), per consumer over its own keys:
//   S^T = K Q^T, dP^T = V dO^T (wgmma, shared operands); P^T = exp(S^T scale - lse),
//   dS^T = P^T (dP^T - delta) in registers; dV += P^T dO, dK += dS^T Q (P^T, dS^T from registers);
//   dS^T goes to shared memory and dQ_part = dS K over the consumer's 64 keys.
// Query split (d 64, 128-query steps), per consumer over 64 of the step's queries and all keys:
//   S = Q K^T, dP = dO V^T; P and dS go to shared memory; dQ = dS K (complete rows); after a
//   barrier, dV += P^T dO and dK += dS^T Q over the consumer's keys read P / dS M-major.
// Either way each consumer adds its 64 x D fp32 dQ rows into the accumulator with one TMA
// reduction per 32 columns (no per-element atomics). The prep / dq conversion / dsink kernels
// around it are the portable path's, and so is the deterministic mode's dq kernel (this kernel
// then skips dQ: its dK and dV have a fixed summation order already).
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>

#include "cuda/common/ptx.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

using sm80::Mask;
using sm80::Params;
using sm80::Sequence;

// Shared memory of the backward kernel, in bytes from a 1024-byte aligned base.
template <int D>
struct BwdSmem {
  static constexpr BwdTile kT = bwd_tile(D);
  static constexpr int kKVBytes = kT.block_n * D * 2;      // k or v (resident)
  static constexpr int kQBytes = kT.block_m * D * 2;       // one q or dout stage
  static constexpr int kDQBytes = 64 * D * 4;              // one consumer's fp32 dq part
  static constexpr int kPBytes = kT.block_n * kT.block_m * 2;  // a P or dS tile
  static constexpr int k = 0;
  static constexpr int v = k + kKVBytes;
  static constexpr int q = v + kKVBytes;                   // [stages]
  static constexpr int dout = q + kT.stages * kQBytes;     // [stages]
  // dS (query split: [block_m queries][block_n keys] in 64-key sub-tiles; key split: dS^T,
  // [block_n keys][block_m]) and, for the query split, P laid out like dS.
  static constexpr int ds = dout + kT.stages * kQBytes;
  static constexpr int pt = ds + kPBytes;
  static constexpr int dq = pt + (kT.query_split ? kPBytes : 0);  // [consumers][D / 32 chunks]
  static constexpr int ld = dq + kT.consumers * kDQBytes;  // [stages][block_m] {lse2, delta}
  static constexpr int bars = ld + kT.stages * kT.block_m * 8;
  static constexpr int kBars = 1 + 2 * kT.stages;          // kv_full, q_full, empty
  static constexpr int bytes = bars + kBars * 8 + 1024;
};

// Byte offset of element (row, col) in a [rows][64] 16-bit or [rows][32] fp32 tile of 128-byte
// rows under TMA's 128-byte swizzle.
__device__ __forceinline__ int swizzle128(int row, int col_bytes) {
  return row * 128 + ((((col_bytes >> 4) ^ row) & 7) << 4) + (col_bytes & 15);
}

template <typename T, int D>
__global__ void __launch_bounds__((bwd_tile(D).consumers + 1) * 128, 1)
    bwd_kernel(const __grid_constant__ Params p, const __grid_constant__ CUtensorMap map_q,
               const __grid_constant__ CUtensorMap map_k, const __grid_constant__ CUtensorMap map_v,
               const __grid_constant__ CUtensorMap map_dout,
               const __grid_constant__ CUtensorMap map_dq) {
  using L = BwdSmem<D>;
  constexpr BwdTile kT = L::kT;
  constexpr int BM = kT.block_m, BN = kT.block_n, S = kT.stages, kSub = D / 64;
  constexpr int kConsumerThreads = kT.consumers * 128;
  static_assert(BN == 128 && kT.consumers == 2 && BM == (kT.query_split ? 128 : 64),
                "64 keys per consumer; 64 queries per consumer and step (query split) or step");

  extern __shared__ char smem_raw[];
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + L::bars);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* empty = q_full + S;
  float2* sLD = reinterpret_cast<float2*>(base + L::ld);

  const int64_t head_kv = blockIdx.y, b = blockIdx.z;
  const Sequence seq(p, b);
  const int64_t n0 = (int64_t)blockIdx.x * BN;
  if (n0 >= seq.len_k) return;
  const Mask mask = Mask::of(p, seq);
  int64_t q_lo, q_hi;
  mask.query_range(n0, n0 + BN, q_lo, q_hi);
  const int mb_first = (int)(q_lo / BM);
  const int mb_count = q_hi > q_lo ? (int)((q_hi + BM - 1) / BM) - mb_first : 0;
  const int iters = mb_count * p.group;  // (query head of the group, query block) steps
  auto step = [&](int it, int64_t& head, int64_t& m0) {
    head = head_kv * p.group + it / mb_count;
    m0 = (int64_t)(mb_first + it % mb_count) * BM;
  };
  // Packed (varlen) tensors are one batch entry; rows are offset by the sequence start.
  const int bq = seq.varlen ? 0 : (int)b;
  const int rq = (int)(seq.varlen ? seq.row_q : 0), rk = (int)(seq.varlen ? seq.row_k : 0);
  const int dq_row0 = (int)(seq.varlen ? seq.row_q : b * p.seqlen_q);  // rows of dq_accum

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < S; ++s) {
      mbar_init(&q_full[s], 1);
      mbar_init(&empty[s], kConsumerThreads);
    }
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128, lane = threadIdx.x % 32;
  if (wg == 0) {
    regs_dealloc<kT.producer_regs>();
    if (threadIdx.x >= 32) return;
    if (lane == 0) {
      tma_prefetch_desc(&map_q);
      tma_prefetch_desc(&map_dout);
      mbar_expect_tx(kv_full, 2 * L::kKVBytes);
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub) {
        tma_load_4d(base + L::k + sub * BN * 128, &map_k, kv_full, 64 * sub, rk + (int)n0,
                    (int)head_kv, bq);
        tma_load_4d(base + L::v + sub * BN * 128, &map_v, kv_full, 64 * sub, rk + (int)n0,
                    (int)head_kv, bq);
      }
    }
    for (int it = 0; it < iters; ++it) {
      const int s = it % S;
      if (it >= S) mbar_wait(&empty[s], ((it / S) & 1) ^ 1);
      int64_t head, m0;
      step(it, head, m0);
      // lse in the exp2 domain and delta per query row; rows past the end (and rows that saw
      // nothing, lse = -inf) get lse2 = +inf, so P = 0 there.
      for (int i = lane; i < BM; i += 32) {
        float lse2 = INFINITY, delta = 0.f;
        if (m0 + i < seq.len_q) {
          const int64_t li = seq.lse_index(p, head, m0 + i);
          const float lse = p.lse[li];
          lse2 = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
          delta = p.delta[li];
        }
        sLD[s * BM + i] = make_float2(lse2, delta);
      }
      __syncwarp();
      if (lane == 0) {  // its arrival releases the lanes' stores above to the consumers
        mbar_expect_tx(&q_full[s], 2 * L::kQBytes);
#pragma unroll
        for (int sub = 0; sub < kSub; ++sub) {
          tma_load_4d(base + L::q + s * L::kQBytes + sub * BM * 128, &map_q, &q_full[s], 64 * sub,
                      rq + (int)m0, (int)head, bq);
          tma_load_4d(base + L::dout + s * L::kQBytes + sub * BM * 128, &map_dout, &q_full[s],
                      64 * sub, rq + (int)m0, (int)head, bq);
        }
      }
    }
    return;
  }

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1;                          // keys 64c .. 64c + 63 of the block (dK, dV)
  const int warp = (threadIdx.x / 32) % 4, g = lane / 4, t = lane % 4;
  const bool leader = threadIdx.x % 128 == 0;    // issues this warpgroup's dq reductions
  const int64_t key0 = n0 + 64 * c;
  char* sdQ = base + L::dq + c * L::kDQBytes;    // D / 32 chunks of [64 rows][32 fp32]

  float acc_dk[D / 8][4], acc_dv[D / 8][4];
  sm80::zero(acc_dk);
  sm80::zero(acc_dv);
  // Atomic mode: dQ here, by TMA reductions. Deterministic mode: dQ comes from the portable dq
  // kernel afterwards (reductions land in no fixed order), this kernel does dK and dV only.
  const bool with_dq = p.dq_atomic != 0;
  mbar_wait(kv_full, 0);

  // This consumer's 64 x D fp32 dQ rows (query row0 of the step on) into its staging chunks,
  // then one TMA reduction per 32 columns once every thread of the warpgroup has written.
  auto stage_dq = [&](const float (&dq)[8][4], int half) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = 16 * warp + g + 8 * r, col = 64 * half + 8 * nt + 2 * t;
        *reinterpret_cast<float2*>(sdQ + (col / 32) * 64 * 128 + swizzle128(row, (col % 32) * 4)) =
            make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]);
      }
  };
  auto reduce_dq = [&](int64_t head, int64_t row0) {
    if (!leader) return;
#pragma unroll
    for (int ch = 0; ch < D / 32; ++ch)
      tma_reduce_add_3d(&map_dq, sdQ + ch * 64 * 128, 32 * ch, (int)head, dq_row0 + (int)row0);
    bulk_commit();
  };

  if constexpr (kT.query_split) {
    static_assert(kSub == 1, "the query split keeps 64 x 128 S and dP tiles: d 64 only");
    const T* sK = reinterpret_cast<const T*>(base + L::k);
    const T* sV = reinterpret_cast<const T*>(base + L::v);
    char* sP = base + L::pt;    // [BM queries][BN keys] in two 64-key sub-tiles
    char* sdS = base + L::ds;
    constexpr int kSubBytes = BM * 128;  // one 64-key sub-tile of P / dS
    for (int it = 0; it < iters; ++it) {
      const int s = it % S;
      int64_t head, m0;
      step(it, head, m0);
      const char* sQ = base + L::q + s * L::kQBytes;
      const char* sdO = base + L::dout + s * L::kQBytes;
      const int64_t q0 = m0 + 64 * c;  // this consumer's queries
      mbar_wait(&q_full[s], (it / S) & 1);

      float sc[BN / 8][4], dp[BN / 8][4];  // S and dP: this warp's 16 queries x 128 keys
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(sc, kmajor_desc(sQ + c * 64 * 128, kk, 0), kmajor_desc(sK, kk, 0), kk > 0, T{});
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(dp, kmajor_desc(sdO + c * 64 * 128, kk, 0), kmajor_desc(sV, kk, 0), kk > 0, T{});
      wgmma_commit();
      wgmma_wait<0>();
      pin(sc);
      pin(dp);

      // P and dS (queries 16 warp + g (+8) of this consumer, keys 8 nt + 2t), stored as T.
      const float2* ld = sLD + s * BM + 64 * c;
      const bool masked = !mask.all_visible(q0, q0 + 64, n0, n0 + BN);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = 16 * warp + g + 8 * r;
        int lo = 0, hi = BN - 1;
        if (masked) mask.row_bounds(q0 + row, n0, BN, lo, hi);
        const float2 x = ld[row];
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
          float pv[2], ds[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * nt + 2 * t + e;
            pv[e] = ptx::exp2f_approx(fmaf(sc[nt][2 * r + e], p.scale_log2, -x.x));
            if (col < lo || col > hi) pv[e] = 0.f;
            ds[e] = pv[e] * (dp[nt][2 * r + e] - x.y);
          }
          const int at = (nt / 8) * kSubBytes + swizzle128(64 * c + row, (8 * nt + 2 * t) % 64 * 2);
          *reinterpret_cast<uint32_t*>(sP + at) = ptx::pack2<T>(pv[0], pv[1]);
          *reinterpret_cast<uint32_t*>(sdS + at) = ptx::pack2<T>(ds[0], ds[1]);
        }
      }
      fence_async_smem();
      if (leader) bulk_wait_read();  // the previous step's dq reduction has read sdQ
      named_sync(3, 256);            // P and dS of both consumers are in shared memory

      // dQ (this consumer's 64 queries, complete) = dS K; dV += P^T dO, dK += dS^T Q over this
      // consumer's keys, P^T / dS^T read M-major from sub-tile c.
      // (The deterministic mode discards dq: skipping the product costs registers, see notes.)
      float dq[8][4];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        mma_ss<0, 1>(dq, kmajor_desc(sdS + c * 64 * 128, kk, kSubBytes), nmajor_desc(sK, kk, 0),
                     kk > 0, T{});
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        mma_ss<1, 1>(acc_dv, nmajor_desc(sP + c * kSubBytes, kk, 0), nmajor_desc(sdO, kk, 0), 1, T{});
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        mma_ss<1, 1>(acc_dk, nmajor_desc(sdS + c * kSubBytes, kk, 0), nmajor_desc(sQ, kk, 0), 1, T{});
      wgmma_commit();
      wgmma_wait<0>();
      pin(dq);
      pin(acc_dv);
      pin(acc_dk);
      mbar_arrive(&empty[s]);
      if (with_dq) {
        stage_dq(dq, 0);
        fence_async_smem();
      }
      named_sync(3, 256);  // both consumers are done with P / dS; sdQ is written
      if (with_dq) reduce_dq(head, q0);
    }
  } else {
    const T* sK = reinterpret_cast<const T*>(base + L::k + c * 64 * 128);
    const T* sV = reinterpret_cast<const T*>(base + L::v + c * 64 * 128);
    char* sdS = base + L::ds + c * 64 * 128;  // this warpgroup's 64 key rows of dS^T
    // S^T = K Q^T and dP^T = V dO^T of step it, into st / dpt (this warp's 16 keys x 64 queries).
    float st[BM / 8][4], dpt[BM / 8][4];
    auto issue_sdp = [&](int it) {
      const int s = it % S;
      const T* sQ = reinterpret_cast<const T*>(base + L::q + s * L::kQBytes);
      const T* sdO = reinterpret_cast<const T*>(base + L::dout + s * L::kQBytes);
      mbar_wait(&q_full[s], (it / S) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(st, kmajor_desc(sK, kk, BN * 128), kmajor_desc(sQ, kk, BM * 128), kk > 0, T{});
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(dpt, kmajor_desc(sV, kk, BN * 128), kmajor_desc(sdO, kk, BM * 128), kk > 0, T{});
      wgmma_commit();
    };

    for (int it = 0; it < iters; ++it) {
      const int s = it % S;
      int64_t head, m0;
      step(it, head, m0);
      const T* sQ = reinterpret_cast<const T*>(base + L::q + s * L::kQBytes);
      const T* sdO = reinterpret_cast<const T*>(base + L::dout + s * L::kQBytes);
      issue_sdp(it);
      wgmma_wait<0>();
      pin(st);
      pin(dpt);

      // P^T and dS^T in place; masked pairs get P = 0.
      const float2* ld = sLD + s * BM;
      const bool masked = !mask.all_visible(m0, m0 + BM, key0, key0 + 64);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        int lo = 0, hi = BM - 1;
        if (masked) mask.key_row_bounds(key0 + 16 * warp + g + 8 * r, m0, BM, lo, hi);
#pragma unroll
        for (int nt = 0; nt < BM / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * nt + 2 * t + e;
            const float2 x = ld[col];
            float pv = ptx::exp2f_approx(fmaf(st[nt][2 * r + e], p.scale_log2, -x.x));
            if (col < lo || col > hi) pv = 0.f;
            st[nt][2 * r + e] = pv;
            dpt[nt][2 * r + e] = pv * (dpt[nt][2 * r + e] - x.y);
          }
      }
      uint32_t pf[BM / 16][4], dsf[BM / 16][4];
      sm80::acc_to_a<BM / 16, T>(pf, st);
      sm80::acc_to_a<BM / 16, T>(dsf, dpt);

      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        mma_rs<1>(acc_dv, pf[kk], nmajor_desc(sdO, kk, BM * 128), 1, T{});
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        mma_rs<1>(acc_dk, dsf[kk], nmajor_desc(sQ, kk, BM * 128), 1, T{});
      wgmma_commit();

      if (!with_dq) {
        wgmma_wait<0>();
        pin(acc_dv);
        pin(acc_dk);
        pin(pf);
        pin(dsf);
        mbar_arrive(&empty[s]);
        continue;
      }
      // dS^T (this thread's rows 16 warp + g (+8), query columns 8 nt + 2t) into shared memory,
      // laid out as the M-major A operand of dQ = dS K.
#pragma unroll
      for (int nt = 0; nt < BM / 8; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = 16 * warp + g + 8 * r;
          *reinterpret_cast<uint32_t*>(sdS + swizzle128(row, (8 * nt + 2 * t) * 2)) = dsf[nt / 2][2 * (nt % 2) + r];
        }
      fence_async_smem();
      if (leader) bulk_wait_read();  // the previous step's dq reduction has read sdQ
      named_sync(3 + c, 128);

      // dQ_part (64 queries x D) = dS (queries x this warpgroup's 64 keys) K, 64 columns at a time.
#pragma unroll
      for (int half = 0; half < kSub; ++half) {
        float dq[8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          mma_ss<1, 1>(dq, nmajor_desc(sdS, kk, 0),
                       nmajor_desc(reinterpret_cast<const char*>(sK) + half * BN * 128, kk, 0),
                       kk > 0, T{});
        wgmma_commit();
        wgmma_wait<0>();
        pin(dq);
        if (half == 0) {  // the dV / dK products are done too: their registers and the stage free
          pin(acc_dv);
          pin(acc_dk);
          pin(pf);
          pin(dsf);
          mbar_arrive(&empty[s]);
        }
        stage_dq(dq, half);
      }
      fence_async_smem();
      named_sync(3 + c, 128);
      reduce_dq(head, m0);
    }
  }

  // Epilogue: dK (scaled) and dV through this warpgroup's staging rows, 16 bytes at a time.
  if (leader) bulk_wait();
  named_sync(5 + c, 128);
  constexpr int kStage = sm80::smem_stride(D);
  T* stage = reinterpret_cast<T*>(sdQ) + warp * 16 * kStage;
  const int64_t row = key0 + 16 * warp, rows_left = seq.len_k - row;
  T* gdK = static_cast<T*>(p.dk.data) + seq.offset(p.dk, false, row, head_kv);
  T* gdV = static_cast<T*>(p.dv.data) + seq.offset(p.dv, false, row, head_kv);
  sm80::stage_acc<D / 8, T>(stage, kStage, acc_dk, p.scale, lane);
  __syncwarp();
  sm80::store_rows16<D>(gdK, p.dk.row_stride, stage, rows_left, lane);
  __syncwarp();
  sm80::stage_acc<D / 8, T>(stage, kStage, acc_dv, 1.f, lane);
  __syncwarp();
  sm80::store_rows16<D>(gdV, p.dv.row_stride, stage, rows_left, lane);
}

}  // namespace sinkattn::cuda::sm90
