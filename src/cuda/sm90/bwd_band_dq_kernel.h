// Hopper dq for narrow bands under GQA (sm_90a, head dim 64; where the band forward applies):
// the band forward's layout (fwd_band_kernel.h) on the query side of the backward. A consumer
// warpgroup's 64 rows are 16 query positions of 4 query heads (warp w: head 4c + w), all seeing
// one span of at most 144 keys; per 16-position block it computes
//   S = Q K^T and dP = dO V^T over the span (m64n144, two commit groups: P = exp2(S scale_log2
//   - lse2) while dP is still on the tensor cores), dS = P (dP - delta) into A fragments, and
//   dQ = dS K over the span (9 k-steps), complete: written once, scaled, in the output dtype.
// So no fp32 accumulator, zeroing, reduction, handoff or conversion, and the same sum every run.
// It also takes over the prep: delta_i = dO_i . O_i of its rows (O from global memory beside
// the products, dO from its stage), for dS and, written out, for the dK / dV kernel after it,
// and the dsink partials; so O and dO are not read by a pass of their own.
// The dK / dV kernel (bwd_kernel.h, its kDkDvOnly instantiation) then runs without its dQ part,
// which cost it a fifth of its products, a barrier between its consumers per step and the
// handoff's waits, and with the dS^T tiles' room as deeper q / dO staging. A run of
// BandTile::run blocks shares one k / v tile (loaded once for 8 query heads, the next run's
// into a second buffer); q and dO stream through kStages stages (band_run.h's producer); the
// grid is persistent, as the forward's.
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/common/ptx.h"
#include "cuda/sm80/bwd_prep.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm90/band_run.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

// Shared memory of the band dq kernel, in bytes from a 1024-byte aligned base.
struct BandDqSmem {
  static constexpr BandTile kT = band_tile();
  // q / dO stages. A block's dq is staged in its own q rows (dead once S is done), so a stage
  // is held until the block's dq is stored. (H200, window 128 16k: a third stage 0.192 ms
  // against 0.191; staged in rows of their own, before, 0.204.)
  static constexpr int kStages = 2;
  static constexpr bool kDout = true;  // the band producer loads dO beside q
  static constexpr int kKeys = 16 * kT.run + kT.span - 16;  // keys of a run's k / v tile
  static constexpr int kKVBytes = kKeys * 128;              // [kKeys][64] 16-bit
  static constexpr int kQBytes = kT.heads * 16 * 128;       // one q or dO stage: [heads][16][64]
  static constexpr int k = 0;                               // [2]: a run's, and the next's
  static constexpr int v = k + 2 * kKVBytes;                // [2]
  static constexpr int q = v + 2 * kKVBytes;                // [kStages]
  static constexpr int dout = q + kStages * kQBytes;        // [kStages]
  static constexpr int bars = dout + kStages * kQBytes;
  static constexpr int bytes = bars + (4 + 2 * kStages) * 8 + 1024;  // BandBars; alignment
  static_assert(kKeys <= 256, "one TMA box per k / v tile");
  static_assert(kKVBytes % 1024 == 0 && kQBytes % 1024 == 0, "swizzled tiles stay aligned");
  static_assert(bytes <= 227 * 1024, "fits one block per SM");
};

// Grid: a block per SM (or SINKATTN_SM90_PERSISTENT blocks), each walking runs (BandItems).
template <typename T, bool kSlots>  // kSlots: band_run.h band_slots
__global__ void __launch_bounds__((band_tile().consumers + 1) * 128, 1)
    bwd_band_dq_kernel(const __grid_constant__ sm80::Params p,
                       const __grid_constant__ CUtensorMap map_q,
                       const __grid_constant__ CUtensorMap map_k,
                       const __grid_constant__ CUtensorMap map_v,
                       const __grid_constant__ CUtensorMap map_dout) {
  using L = BandDqSmem;
  constexpr BandTile kT = L::kT;
  constexpr int NT = kT.span / 8;  // n-tiles of a span
  constexpr int S = L::kStages;

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  const BandBars<L> bars(base);
  const BandItems<kSlots> items(p);
  const int wg = band_start<L>(p, items, base, bars, &map_q, &map_k, &map_v, &map_dout);
  if (wg == 0) return;

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4;
  const int lr = (int)(p.window_left + p.window_right);
  int runs_done = 0, q_done = 0;  // as the producer counts them
  int walk = 0;  // BandItems::sequence
  for (int64_t item = blockIdx.x; item < items.total; item += gridDim.x) {
    const BandRun run(p, item, items, walk);
    if (run.blocks == 0) continue;
    const sm80::Sequence& seq = run.seq;
    const int64_t r0 = run.r0, head = run.h0 + 4 * c + warp;
    const int kb = runs_done % 2, q_base = q_done;
    const int run_rows = (int)min(seq.len_q - r0, (int64_t)16 * kT.run);
    // This warp's dq and O rows and lse / delta entries from the run's first row (contiguous).
    T* const dq0 = static_cast<T*>(p.dq.data) + seq.offset(p.dq, true, r0, head);
    const T* const o0 = static_cast<const T*>(p.out.data) + seq.offset(p.out, true, r0, head);
    const int64_t li0 = seq.lse_index(p, head, r0);
    const float* const lse0 = p.lse + li0;
    float* const delta0 = p.delta + li0;
    // dsink partials per kPrepRows rows (runs start at multiples of them), as the prep's.
    static_assert(16 * kT.run % sm80::kPrepRows == 0, "a partial's rows lie in one run");
    float* const dsink0 =
        p.dsink ? p.dsink_partial + sm80::row_group(p, seq.group0(p), head, r0) : nullptr;
    // (Used as loaded: scaled here, its load latency stalled the run's start, 4% of the samples.)
    const float sink = p.dsink ? p.sinks[head] : 0.f;
    float dsink = 0.f;  // this thread's rows of the current partial
    mbar_wait(&bars.kv_full[kb], (runs_done / 2) & 1);
    ++runs_done;
    q_done += run.blocks;

    // Block j's operands: q, dO of its stage; its span starts 16 j keys into the run's tile.
    auto stage_of = [&](int j) { return (q_base + j) % S; };
    auto span = [&](int j, int tile) {
      return reinterpret_cast<const T*>(base + tile + kb * L::kKVBytes + j * 16 * 128);
    };
    auto rows_of = [&](int j, int buf) {
      return reinterpret_cast<const T*>(base + buf + stage_of(j) * L::kQBytes + c * 64 * 128);
    };
    // O of block j's rows g, g + 8, columns [16 (lane % 4), + 16), and their lse: loaded a
    // block ahead (loaded at the block's start, the lse held 11% of the stall samples).
    uint4 ov[2][2];
    float lse_ahead[2];
    auto load_rows = [&](int j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = 16 * j + g + 8 * h;
        const uint4* src = reinterpret_cast<const uint4*>(o0 + (int64_t)row * p.out.row_stride +
                                                          16 * (lane % 4));
#pragma unroll
        for (int x = 0; x < 2; ++x) ov[h][x] = row < run_rows ? src[x] : make_uint4(0, 0, 0, 0);
        lse_ahead[h] = row < run_rows ? lse0[row] : -INFINITY;
      }
    };
    load_rows(0);
    for (int j = 0; j < run.blocks; ++j) {
      // lse in the exp2 domain of this thread's rows g, g + 8; rows past the end, and rows that
      // saw nothing (lse -inf), get lse2 = +inf, so P = 0 there.
      float lse2[2];
#pragma unroll
      for (int h = 0; h < 2; ++h)
        lse2[h] = lse_ahead[h] == -INFINITY ? INFINITY : lse_ahead[h] * 1.4426950408889634f;
      // S and dP, two commit groups. (S of the next block issued with this block's dQ: ptxas
      // serialised every wgmma of the kernel, C7514.)
      float sc[NT][4], dp[NT][4];
      mbar_wait(&bars.q_full[stage_of(j)], ((q_base + j) / S) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        mma_ss<0, 0>(sc, kmajor_desc(rows_of(j, L::q), kk, 0), kmajor_desc(span(j, L::k), kk, 0),
                     kk > 0, T{});
      wgmma_commit();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        mma_ss<0, 0>(dp, kmajor_desc(rows_of(j, L::dout), kk, 0),
                     kmajor_desc(span(j, L::v), kk, 0), kk > 0, T{});
      wgmma_commit();

      // delta of rows g, g + 8 while the products run: this thread's 16 columns, then the quad's.
      const char* const dout_rows =
          base + L::dout + stage_of(j) * L::kQBytes + (c * 4 + warp) * 16 * 128;
      float delta[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        delta[h] = 0.f;
#pragma unroll
        for (int x = 0; x < 2; ++x) {
          const uint4 d = *reinterpret_cast<const uint4*>(
              dout_rows + swizzle128(g + 8 * h, 32 * (lane % 4) + 16 * x));
          const uint32_t* dw = reinterpret_cast<const uint32_t*>(&d);
          const uint32_t* ow = reinterpret_cast<const uint32_t*>(&ov[h][x]);
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            const float2 a = ptx::unpack2<T>(ow[w]), b = ptx::unpack2<T>(dw[w]);
            delta[h] = fmaf(a.x, b.x, fmaf(a.y, b.y, delta[h]));
          }
        }
        delta[h] += __shfl_xor_sync(0xffffffff, delta[h], 1);
        delta[h] += __shfl_xor_sync(0xffffffff, delta[h], 2);
      }

      // P in place while dP runs; hidden scores are -inf, so P = 0 there.
      wgmma_wait<1>();
      pin(sc);
      mask_band_span(sc, run.key0 + 16 * j, seq.len_k, lr, lane);
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          sc[n][e] = ptx::exp2f_approx(fmaf(sc[n][e], p.scale_log2, -lse2[e / 2]));
      wgmma_wait<0>();
      pin(dp);
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = sc[n][e] * (dp[n][e] - delta[e / 2]);
      if (j + 1 < run.blocks) load_rows(j + 1);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = 16 * j + g + 8 * h;
        if (lane % 4 == 0 && row < run_rows) delta0[row] = delta[h];
        // the row's sink probability times delta
        dsink += ptx::exp2f_approx(fmaf(sink, 1.4426950408889634f, -lse2[h])) * delta[h];
      }
      if (dsink0 != nullptr && (j % 4 == 3 || j == run.blocks - 1)) {
        // The partial of this warp's kPrepRows rows: its 8 row pairs, in a fixed order.
#pragma unroll
        for (int o = 4; o < 32; o *= 2) dsink += __shfl_xor_sync(0xffffffff, dsink, o);
        if (lane == 0) dsink0[j / 4] = dsink;
        dsink = 0.f;
      }
      uint32_t dsf[NT / 2][4];
      sm80::acc_to_a<NT / 2, T>(dsf, dp);

      float acc_dq[8][4];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < NT / 2; ++kk)
        mma_rs<1>(acc_dq, dsf[kk], nmajor_desc(span(j, L::k), kk, 0), kk > 0, T{});
      wgmma_commit();
      wgmma_wait<0>();
      pin(acc_dq);
      pin(dsf);

      // dq through this warp's 16 q rows of the stage (swizzled as TMA wrote them; 4 stmatrix),
      // then 16-byte stores of 4 rows per instruction; the stage goes back to the producer after.
      const int rows_left = run_rows - 16 * j;
      T* const out = dq0 + (int64_t)(16 * j) * p.dq.row_stride;
      char* const stage = base + L::q + stage_of(j) * L::kQBytes + (c * 4 + warp) * 16 * 128;
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        // n-tiles 2m, 2m + 1 (columns 16m ..): four 8 x 8 matrices, rows 0-7 and 8-15 of each.
        uint32_t r[4];
        sm80::pack_c16x16<T>(r, acc_dq[2 * m], acc_dq[2 * m + 1], p.scale);
        ptx::stmatrix_x4(stage + swizzle128(lane % 8 + (lane / 8) % 2 * 8, 32 * m + lane / 16 * 16),
                         r);
      }
      __syncwarp();
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = 4 * i + lane / 8, ch = lane % 8;
        if (row < rows_left)
          *reinterpret_cast<uint4*>(out + (int64_t)row * p.dq.row_stride + ch * 8) =
              *reinterpret_cast<const uint4*>(stage + swizzle128(row, ch * 16));
      }
      mbar_arrive(&bars.q_empty[stage_of(j)]);  // q, dO and the staged dq are read
    }
    mbar_arrive(&bars.kv_empty[kb]);  // the run's k / v tiles are read
  }
}

}  // namespace sinkattn::cuda::sm90
