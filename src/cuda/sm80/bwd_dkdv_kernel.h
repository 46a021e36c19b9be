// Backward, dk/dv kernel: one block per (key block, kv head, sequence). It walks the query
// blocks that can see its keys, for every query head of the GQA group, so dk and dv are
// reduced over the group in registers (no atomics, no k/v copies). Per query block:
//   A: S^T = K Q^T, dP^T = V dO^T; P^T = exp(S^T * scale - lse), dS^T = P^T (dP^T - delta)
//      (kept in registers when a warp spans the whole query block, else shared as T);
//   B: dV += P^T dO, dK += dS^T Q;
//   C: (params.dq_atomic only) dQ += dS K, added into the fp32 accumulator with atomics.
// Without dq_atomic, dq comes from bwd_dq_kernel.h (deterministic, recomputes S and dP).
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/ptx.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

template <typename T, int D, bool kLarge>
__global__ void __launch_bounds__(tile_size(Kernel::kBwdDkDv, D, kLarge).warps * 32)
    bwd_dkdv_kernel(const __grid_constant__ Params p) {
  constexpr TileSize kT = tile_size(Kernel::kBwdDkDv, D, kLarge);
  constexpr int BM = kT.block_m, BN = kT.block_n, kThreads = kT.warps * 32;
  constexpr int kS = smem_stride(D), kPS = smem_stride(BM);
  constexpr int KT = kT.m_tiles;    // 16-row m-tiles per warp: keys in phases A, B; queries in C
  constexpr int WN = BN / (16 * KT), WM = kT.warps_m;
  constexpr int MA = BM / WM;        // queries per warp in phase A
  constexpr int DB = D / WM;         // head-dim columns per warp in phase B
  constexpr int WCM = BM / (16 * KT);        // phase C: warps along queries ...
  constexpr int DC = D / (kT.warps / WCM);   // ... and head-dim columns per warp
  static_assert(kT.warps == WN * WM && kT.warps % WCM == 0, "warp tiling");
  static_assert(MA % 16 == 0 && DB % 16 == 0 && DC % 16 == 0, "pairs of n-tiles");
  static_assert(WM > 1 || KT == 1, "k, v and P^T in registers (warps_m 1) take one m-tile");

  extern __shared__ __align__(16) char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + BN * kS;
  constexpr int kStages = kT.q_stages;
  T* sQ = sV + BN * kS;              // [kStages][BM][kS]
  T* sdO = sQ + kStages * BM * kS;   // [kStages][BM][kS]
  // [kStages][BM] pairs {lse in the exp2 domain, delta} per query row.
  float2* sLD = reinterpret_cast<float2*>(sdO + kStages * BM * kS);
  T* sdS = reinterpret_cast<T*>(sLD + kStages * BM);  // [BN][kPS] dS^T (WM > 1 or dq_atomic)
  T* sP = sdS + BN * kPS;                              // [BN][kPS] P^T (only if WM > 1)

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const GridPos at = kv_group_grid_pos((p.seqlen_k + BN - 1) / BN, p.bwd_kv_group);
  const int64_t head_kv = at.head, b = at.b;
  const Sequence seq(p, b);
  const int64_t n0 = at.block * BN;  // under a causal mask the first key blocks see the most
  if (n0 >= seq.len_k) return;
  const Mask mask = Mask::of(p, seq);
  int64_t q_lo, q_hi;
  mask.query_range(n0, n0 + BN, q_lo, q_hi);
  const int64_t mb_first = q_lo / BM;
  const int64_t mb_count = q_hi > q_lo ? (q_hi + BM - 1) / BM - mb_first : 0;
  const int64_t iters = mb_count * p.group;

  load_tile_async<BN, D, kThreads>(sK, static_cast<const T*>(p.k.data) +
                                           seq.offset(p.k, false, n0, head_kv),
                                   p.k.row_stride, seq.len_k - n0);
  load_tile_async<BN, D, kThreads>(sV, static_cast<const T*>(p.v.data) +
                                           seq.offset(p.v, false, n0, head_kv),
                                   p.v.row_stride, seq.len_k - n0);
  // The walk: every query head of the group (outer) over the query blocks from mb_first
  // (inner). Steps advance by counting: a 64-bit division per step cost ~50 instructions.
  struct Step {
    int64_t head, m0;
  };
  const int64_t m_first = mb_first * BM, m_end = (mb_first + mb_count) * BM;
  auto next = [&](Step st) {
    st.m0 += BM;
    if (st.m0 == m_end) st.m0 = m_first, ++st.head;
    return st;
  };
  auto load_q = [&](Step st, int buf) {
    load_tile_async<BM, D, kThreads>(sQ + buf * BM * kS, static_cast<const T*>(p.q.data) +
                                                             seq.offset(p.q, true, st.m0, st.head),
                                     p.q.row_stride, seq.len_q - st.m0);
    load_tile_async<BM, D, kThreads>(sdO + buf * BM * kS,
                                     static_cast<const T*>(p.dout.data) +
                                         seq.offset(p.dout, true, st.m0, st.head),
                                     p.dout.row_stride, seq.len_q - st.m0);
    const int64_t li0 = seq.lse_index(p, st.head, st.m0), rows = seq.len_q - st.m0;
#pragma unroll
    for (int j = 0; j < (BM + kThreads - 1) / kThreads; ++j) {
      const int i = (int)threadIdx.x + j * kThreads;
      if (i >= BM) break;
      float lse2 = INFINITY, delta = 0.f;  // rows past the end: P = 0
      if (i < rows) {
        const float lse = p.lse[li0 + i];
        // A row with no key and no sink has lse = -inf and P = 0: use +inf, not -inf.
        lse2 = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
        delta = p.delta[li0 + i];
      }
      sLD[buf * BM + i] = make_float2(lse2, delta);
    }
  };
  Step cur{head_kv * p.group, m_first};
  if (iters > 0) load_q(cur, 0);
  ptx::cp_async_commit();

  const int wn = warp % WN, wm = warp / WN;
  const int key_r0 = wn * 16 * KT;  // this warp's first key row of the block (phases A, B)
  // This thread's key rows (two per m-tile, row 2m + r) stay the same for the whole kernel: the
  // mask seen from them, once (fewer live registers than the mask in the loop).
  int64_t keys[2 * KT];
#pragma unroll
  for (int k = 0; k < 2 * KT; ++k) keys[k] = n0 + key_r0 + 16 * (k / 2) + g + 8 * (k % 2);
  const KeyRowsMask<2 * KT> key_mask(mask, n0, n0 + BN, keys);

  float acc_dv[KT][DB / 8][4], acc_dk[KT][DB / 8][4];
  zero(acc_dv);
  zero(acc_dk);
  // With one warp per 16 keys across the whole query block (WM == 1), the k and v fragments
  // live in registers and P^T / dS^T feed the dV / dK products without a trip through
  // shared memory (dS^T still goes there for phase C).
  constexpr bool kRegP = WM == 1;
  uint32_t k_frag[kRegP ? D / 16 : 1][4], v_frag[kRegP ? D / 16 : 1][4];
  if constexpr (kRegP) {
    ptx::cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      load_a(k_frag[kk], sK, kS, wn * 16, kk * 16, lane);
      load_a(v_frag[kk], sV, kS, wn * 16, kk * 16, lane);
    }
  }

  for (int64_t it = 0; it < iters; ++it) {
    const int buf = (int)(it % kStages);
    ptx::cp_async_wait<0>();
    __syncthreads();
    const int64_t head = cur.head, m0 = cur.m0;
    const T* q_tile = sQ + buf * BM * kS;
    const T* do_tile = sdO + buf * BM * kS;
    const float2* ld = sLD + buf * BM;

    // Phase A: this warp's 16 KT keys x MA queries.
    float s[KT][MA / 8][4], dp[KT][MA / 8][4];
    zero(s);
    zero(dp);
    if constexpr (kRegP) {
      gemm_rs<true, D / 16>(s[0], k_frag, q_tile, kS, 0, lane);
      gemm_rs<true, D / 16>(dp[0], v_frag, do_tile, kS, 0, lane);
    } else {
      gemm_ss_a<false, true, D / 16>(s, sK, kS, key_r0, q_tile, kS, wm * MA, lane);
      gemm_ss_a<false, true, D / 16>(dp, sV, kS, key_r0, do_tile, kS, wm * MA, lane);
    }
    // Scores the mask hides go to -inf before the exps (P = 0), only in steps the mask cuts:
    // this thread's key rows see the warp's query columns [lo, hi] (one-bit column masks).
    if (key_mask.cuts((int)m0, BM)) {
#pragma unroll
      for (int m = 0; m < KT; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          int lo, hi;
          key_mask.bounds(2 * m + r, (int)m0, BM, lo, hi);
          const int c0 = wm * MA;  // the warp's first query column
          mask_row(s[m], r, imax(-1, imin(lo - c0, MA)), imax(-1, imin(hi - c0, MA)), lane);
        }
    }
#pragma unroll
    for (int m = 0; m < KT; ++m)
#pragma unroll
      for (int n = 0; n < MA / 8; ++n) {
        const int q0 = wm * MA + n * 8 + 2 * t;  // this thread's two query columns: q0, q0 + 1
        const float4 ld2 = *reinterpret_cast<const float4*>(ld + q0);  // {lse2, delta} x 2
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float lse2 = e % 2 ? ld2.z : ld2.x, delta = e % 2 ? ld2.w : ld2.y;
          const float pe = ptx::exp2f_approx(fmaf(s[m][n][e], p.scale_log2, -lse2));
          s[m][n][e] = pe;                              // P^T
          dp[m][n][e] = pe * (dp[m][n][e] - delta);     // dS^T
        }
      }
    if (!kRegP || p.dq_atomic) {  // other warps need these rows of dS^T (and P^T)
#pragma unroll
      for (int m = 0; m < KT; ++m)
#pragma unroll
        for (int n = 0; n < MA / 8; n += 2) {
          const int row = key_r0 + 16 * m, col = wm * MA + n * 8;
          if constexpr (!kRegP) store_c16x16(sP, kPS, row, col, s[m][n], s[m][n + 1], lane);
          store_c16x16(sdS, kPS, row, col, dp[m][n], dp[m][n + 1], lane);
        }
      __syncthreads();
    }

    // Phase B: this warp's 16 KT keys x DB head-dim columns of dV and dK.
    if constexpr (kRegP) {  // P^T and dS^T straight from registers (C layout = A layout)
      uint32_t a[BM / 16][4];
      acc_to_a<BM / 16, T>(a, s[0]);
      gemm_rs<false, BM / 16>(acc_dv[0], a, do_tile, kS, 0, lane);
      acc_to_a<BM / 16, T>(a, dp[0]);
      gemm_rs<false, BM / 16>(acc_dk[0], a, q_tile, kS, 0, lane);
    } else {
      gemm_ss_a<false, false, BM / 16>(acc_dv, sP, kPS, key_r0, do_tile, kS, wm * DB, lane);
      gemm_ss_a<false, false, BM / 16>(acc_dk, sdS, kPS, key_r0, q_tile, kS, wm * DB, lane);
    }

    // The next step's copies, issued while the tensor cores work on dV and dK (every warp has
    // passed the barrier above, so the other stage is free).
    if (kStages == 2 && it + 1 < iters) {
      load_q(next(cur), buf ^ 1);
      ptx::cp_async_commit();
    }

    // Phase C: this warp's 16 KT queries x DC head-dim columns of dS K, added into dq_accum.
    if (p.dq_atomic) {
      const int cm = warp % WCM, cd = warp / WCM;
      float acc_dq[KT][DC / 8][4];
      zero(acc_dq);
      gemm_ss_a<true, false, BN / 16>(acc_dq, sdS, kPS, cm * 16 * KT, sK, kS, cd * DC, lane);
      // This thread's first dq row, then rows 8 apart: one pointer and a row count per step.
      const int64_t i0 = m0 + cm * 16 * KT + g;
      float* dst = p.dq_accum + ((seq.row_q + i0) * p.heads_q + head) * D + cd * DC + 2 * t;
      const int64_t row_elems = p.heads_q * D;
      const int64_t rows = seq.len_q - i0;  // rows from i0 inside the sequence
#pragma unroll
      for (int m = 0; m < KT; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          if (16 * m + 8 * r >= rows) break;  // rows grow with (m, r)
          float* row = dst + (16 * m + 8 * r) * row_elems;
#pragma unroll
          for (int n = 0; n < DC / 8; ++n)
            ptx::red_add2(row + n * 8, acc_dq[m][n][2 * r], acc_dq[m][n][2 * r + 1]);
        }
    }

    if (kStages == 1 && it + 1 < iters) {
      __syncthreads();  // single buffer: every warp is done with this q/dout tile
      load_q(next(cur), 0);
      ptx::cp_async_commit();
    }
    cur = next(cur);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();

  // Epilogue: stage dK (scaled) and dV in the k/v tiles, then store 16 bytes at a time.
#pragma unroll
  for (int m = 0; m < KT; ++m) {
    stage_acc<DB / 8, T>(sK + (key_r0 + 16 * m) * kS + wm * DB, kS, acc_dk[m], p.scale, lane);
    stage_acc<DB / 8, T>(sV + (key_r0 + 16 * m) * kS + wm * DB, kS, acc_dv[m], 1.f, lane);
  }
  __syncthreads();
  store_tile<BN, D, kThreads>(static_cast<T*>(p.dk.data) + seq.offset(p.dk, false, n0, head_kv),
                              p.dk.row_stride, sK, seq.len_k - n0);
  store_tile<BN, D, kThreads>(static_cast<T*>(p.dv.data) + seq.offset(p.dv, false, n0, head_kv),
                              p.dv.row_stride, sV, seq.len_k - n0);
}

}  // namespace sinkattn::cuda::sm80
