// Hopper forward for narrow bands under GQA (sm_90a, head dim 64; tile_size.h's fwd_band says
// where it applies). A consumer warpgroup's 64 rows are 16 query positions of 4 query heads of
// one kv group (warp w: head 4h + w of the quad h, TMA lays the q box out as [heads][16
// positions][64]), so every warp's rows share one key span of at most 144 keys, computed by one
// m64n144 product and one softmax pass. The per-head narrow kernel (fwd_kernel.h's span pass)
// gives each warpgroup 64 positions of one head: a 192-key span of which a warp's rows see 144,
// and k / v loaded once per query head. Here a run of BandTile::run blocks of 16 positions shares
// one k / v tile for its 8 query heads, loaded once; the q blocks stream through BandTile::stages
// stages, and the consumers take the (block, quad) items in turn. The grid is persistent: the
// producer thread loads the next run's k / v into a second buffer while the consumers finish the
// current run. H200, gptoss 16k window 128 forward: 0.205 ms with the per-head kernel, 0.159 with
// this one as a block per run, 0.139 persistent, 0.137 with 3 q stages, 0.124 with 3 serial
// consumers and no spills (docs/PERFORMANCE.md).
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm90/band_run.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

// Shared memory of the band forward, in bytes from a 1024-byte aligned base.
struct BandSmem {
  static constexpr BandTile kT = band_fwd_tile();
  static constexpr int kKeys = 16 * kT.run + kT.span - 16;  // keys of the block's k / v tile
  static constexpr int kKVBytes = kKeys * 128;              // [kKeys][64] 16-bit
  static constexpr int kStages = kT.stages;                 // q stages
  static constexpr bool kDout = false;                      // (the band producer loads no dO)
  static constexpr int kQBytes = kT.heads * 16 * 128;       // one q stage: [heads][16][64]
  static constexpr int kStage = sm80::smem_stride(64);      // epilogue staging row (elements)
  static constexpr int k = 0;                               // [2]: a run's, and the next's
  static constexpr int v = k + 2 * kKVBytes;                // [2]
  static constexpr int q = v + 2 * kKVBytes;                // [stages]
  static constexpr int o = q + kT.stages * kQBytes;         // 16 staging rows per consumer warp
  static constexpr int bars = o + kT.consumers * 4 * 16 * kStage * 2;
  static constexpr int bytes = bars + (4 + 2 * kT.stages) * 8 + 1024;  // BandBars; alignment
  static_assert(kKeys <= 256, "one TMA box per k / v tile");
  static_assert(kKVBytes % 1024 == 0 && kQBytes % 1024 == 0, "swizzled tiles stay aligned");
  static_assert(bytes <= 227 * 1024, "fits one block per SM");
};

// Grid: a block per SM (or SINKATTN_SM90_PERSISTENT blocks), each walking runs. A run's work
// is 2 items per position block (its two 4-head quads); consumer c takes the block's items c,
// c + C, c + 2C, ... counted over all its runs, so the C consumers stay a fraction of an item
// apart and each q stage is released by the two warpgroups that read its quads.
template <typename T, bool kSlots>  // kSlots: band_run.h band_slots
__global__ void __launch_bounds__((band_fwd_tile().consumers + 1) * 128, 1)
    fwd_band_kernel(const __grid_constant__ sm80::Params p,
                    const __grid_constant__ CUtensorMap map_q,
                    const __grid_constant__ CUtensorMap map_k,
                    const __grid_constant__ CUtensorMap map_v) {
  using L = BandSmem;
  constexpr BandTile kT = L::kT;
  constexpr int NT = kT.span / 8;  // n-tiles of a span
  constexpr int S = kT.stages, C = kT.consumers;
  constexpr int kQuads = kT.heads / 4;  // items per position block

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  const BandBars<L> bars(base);
  // Persistent: block b takes runs b, b + gridDim.x, ... (BandItems); the producer loads a
  // run's k / v while the consumers finish the run before.
  const BandItems<kSlots> items(p);
  const int wg = band_start<L>(p, items, base, bars, &map_q, &map_k, &map_v, nullptr);
  if (wg == 0) return;

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  T* stage = reinterpret_cast<T*>(base + L::o) + (c * 4 + warp) * 16 * L::kStage;
  const int lr = (int)(p.window_left + p.window_right);
  int runs_done = 0, q_done = 0;  // as the producer counts them
  int items_done = 0;             // the block's items before this run
  int walk = 0;  // BandItems::sequence
  for (int64_t item = blockIdx.x; item < items.total; item += gridDim.x) {
    const BandRun run(p, item, items, walk);
    if (run.blocks == 0) continue;
    const sm80::Sequence& seq = run.seq;
    const int64_t r0 = run.r0;
    // 32-bit key bounds: the producer's TMA coordinates hold the same keys in 32 bits. (In 64
    // bits, with the items' state, ptxas spilled the run's first key and reloaded it each item.)
    const int key0 = (int)run.key0, len_k = (int)min(seq.len_k, (int64_t)INT32_MAX);
    const int blocks = run.blocks, kb = runs_done % 2, q_base = q_done;
    const int first = ((c - items_done) % C + C) % C;  // this consumer's first item of the run
    // This warp's heads in the two quads; their sinks are scaled at use (a load's latency).
    static_assert(kQuads == 2, "two quads: the sinks held as two scalars, not an indexed array");
    const int64_t head0 = run.h0 + warp;
    const float sink0 = p.sinks ? p.sinks[head0] : -INFINITY;
    const float sink1 = p.sinks ? p.sinks[head0 + 4] : -INFINITY;
    // This warp's output rows and lse entries of each quad from the run's first row (lse rows are
    // contiguous).
    T* const out_q[2] = {static_cast<T*>(p.out.data) + seq.offset(p.out, true, r0, head0),
                         static_cast<T*>(p.out.data) + seq.offset(p.out, true, r0, head0 + 4)};
    float* const lse_q[2] = {p.lse ? p.lse + seq.lse_index(p, head0, r0) : nullptr,
                             p.lse ? p.lse + seq.lse_index(p, head0 + 4, r0) : nullptr};
    mbar_wait(&bars.kv_full[kb], (runs_done / 2) & 1);
    ++runs_done;
    q_done += blocks;
    items_done += kQuads * blocks;
    const int run_rows = (int)min(seq.len_q - r0, (int64_t)16 * kT.run);

    for (int i = first; i < kQuads * blocks; i += C) {
      const int j = i / kQuads, h = i % kQuads, s = (q_base + j) % S;
      const T* sQ = reinterpret_cast<const T*>(base + L::q + s * L::kQBytes + h * 64 * 128);
      const T* sK = reinterpret_cast<const T*>(base + L::k + kb * L::kKVBytes + j * 16 * 128);
      const T* sV = reinterpret_cast<const T*>(base + L::v + kb * L::kKVBytes + j * 16 * 128);
      float sc[1][NT][4];
      mbar_wait(&bars.q_full[s], ((q_base + j) / S) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        mma_ss<0, 0>(sc[0], kmajor_desc(sQ, kk, 0), kmajor_desc(sK, kk, 0), kk > 0, T{});
      wgmma_commit();
      wgmma_wait<0>();
      pin(sc[0]);
      mbar_arrive(&bars.q_empty[s]);

      mask_band_span(sc[0], key0 + 16 * j, len_k, lr, lane);
      sm80::OnlineSoftmax<1, NT> softmax;
      softmax.init_log2((h == 0 ? sink0 : sink1) * 1.4426950408889634f, lane);
      float m_use[2], inv[2], lse[2];
      softmax.begin(sc, p.scale_log2, m_use);
      softmax.template exps<0, NT>(sc, p.scale_log2, m_use);
      softmax.finish(inv, lse);
      uint32_t pf[NT / 2][4];  // P as A fragments
      float acc_o[1][8][4];    // the first product overwrites it
      // Each k-step's P is packed just before its product, so the scores die as they are
      // packed and the products start under the last exps (packed all at once first, S and P
      // were live together: ptxas spilled P and serialised every wgmma at 160 registers).
#pragma unroll
      for (int kk = 0; kk < NT / 2; ++kk) {
        sm80::c_to_a<T>(pf[kk], sc[0][2 * kk], sc[0][2 * kk + 1]);
        wgmma_fence();  // pf[kk] written since the last fence
        mma_rs<1>(acc_o[0], pf[kk], nmajor_desc(sV, kk, 0), kk > 0, T{});
      }
      wgmma_commit();
      wgmma_wait<0>();
      pin(acc_o[0]);
      pin(pf);

      // Epilogue: this warp's 16 rows of its head in quad h, through its staging rows.
      const int rows_left = run_rows - 16 * j;
      sm80::scale_rows(acc_o, inv);
      if (p.lse != nullptr && lane % 4 == 0) {
        float* const lse_j = (h == 0 ? lse_q[0] : lse_q[1]) + 16 * j;
#pragma unroll
        for (int x = 0; x < 2; ++x) {
          const int row = lane / 4 + 8 * x;
          if (row < rows_left) lse_j[row] = lse[x];
        }
      }
#pragma unroll
      for (int n = 0; n < 8; n += 2)  // 4 stmatrix (16 32-bit stores with stage_acc)
        sm80::store_c16x16(stage, L::kStage, 0, 8 * n, acc_o[0][n], acc_o[0][n + 1], lane);
      __syncwarp();
      T* const out_j = (h == 0 ? out_q[0] : out_q[1]) + (int64_t)(16 * j) * p.out.row_stride;
      sm80::store_rows16<64>(out_j, p.out.row_stride, stage, rows_left, lane);
      __syncwarp();  // the staging rows are rewritten by the next item
    }
    mbar_arrive(&bars.kv_empty[kb]);  // this consumer's reads of the run's k / v are done
  }
}

}  // namespace sinkattn::cuda::sm90
