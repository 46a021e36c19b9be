// What the GQA-packed band kernels (fwd_band_kernel.h, bwd_band_dq_kernel.h) share: the work
// item (a run of 16-position blocks of 8 query heads), the producer and its barriers, and the
// mask of a block's key span.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/fragment_cols.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"

namespace sinkattn::cuda::sm90 {

// The band kernels' work items: (kv head x group of BandTile::heads query heads, run, sequence),
// heads fastest, or packed where band_slots (most of a sequence's runs of the longest's would
// be empty), (kv head x group, run slot) with the runs numbered as sm80/grid.h numbers slots; a
// persistent block takes items blockIdx.x, blockIdx.x + gridDim.x, ... The slots bring ~4,000
// tiny documents beside one of 16k from 4.2M items to 37k. kSlots is a template argument: as a
// runtime flag the walk cost ~1,000 documents of 16..48 tokens 2% (H100, forward and backward).
constexpr int kBandRows = 16 * band_tile().run;  // query rows of a run
__host__ __device__ inline bool band_slots(const sm80::Params& p) {
  return sm80::query_slot_grid(p, kBandRows);
}
// Items of the whole problem.
__host__ __device__ inline int64_t band_items(const sm80::Params& p) {
  const int64_t heads8 = p.heads_kv * (p.group / band_tile().heads);
  const int64_t runs = band_slots(p) ? sm80::query_slots(p, kBandRows)
                                     : band_runs(p.seqlen_q) * p.batch;
  return heads8 * runs;
}

template <bool kSlots>
struct BandItems {
  int octets;            // groups of BandTile::heads query heads per kv head
  int64_t heads8, runs;  // kv heads x octets; runs per sequence (band_runs)
  int64_t total;         // items of the whole problem (band_items)

  __device__ __forceinline__ explicit BandItems(const sm80::Params& p)
      : octets(p.group / band_tile().heads),
        heads8(p.heads_kv * octets),
        runs(band_runs(p.seqlen_q)),
        total(heads8 * (kSlots ? sm80::query_slots(p, kBandRows) : runs * p.batch)) {}

  // The sequence of `item`. `walk`: the sequence of the block's item before (0 at first); a
  // block's items increase, so over slots it scans on from there (common/slots.h
  // slot_owner_from).
  __device__ __forceinline__ int64_t sequence(const sm80::Params& p, int64_t item,
                                              int& walk) const {
    if constexpr (!kSlots) {
      return item / (heads8 * runs);
    } else {
      walk = cuda::slot_owner_from(sm80::packed_q(p), p.batch, kBandRows, (int)(item / heads8),
                                   walk);
      return walk;
    }
  }
};

// One run: its sequence and rows, heads, and the key of its k / v tile's row 0 (the window
// start of its first position; position block j's span starts 16 j rows further, positions
// advancing by one per row: no zigzag here). Keys outside [0, len_k) are masked: TMA reads
// zeros before row 0 and past the last, a packed neighbour's rows in between.
struct BandRun {
  sm80::Sequence seq;
  int64_t r0, hk, h0, key0;  // first row; kv head; first query head; key of the tile's row 0
  int blocks;                // 16-row position blocks (0: the sequence has no rows here)

  // walk: as BandItems::sequence takes it.
  template <bool kSlots>
  __device__ __forceinline__ BandRun(const sm80::Params& p, int64_t item,
                                     const BandItems<kSlots>& it, int& walk)
      : seq(p, it.sequence(p, item, walk)) {
    constexpr int kRun = band_tile().run;
    const int64_t x = item % it.heads8, run = item / it.heads8;
    if constexpr (kSlots) {  // the run's place in its sequence's slots (negative: before them)
      r0 = (run - seq.b - seq.row_q / kBandRows) * kBandRows;
      blocks = r0 >= 0 && r0 < seq.len_q ? (int)min((int64_t)kRun, (seq.len_q - r0 + 15) / 16) : 0;
    } else {
      r0 = run % it.runs * kBandRows;
      blocks = r0 < seq.len_q ? (int)min((int64_t)kRun, (seq.len_q - r0 + 15) / 16) : 0;
    }
    hk = x / it.octets;
    h0 = hk * p.group + x % it.octets * band_tile().heads;
    key0 = cuda::Mask::of(p, seq).pos(r0) - p.window_left;
  }
};

// The band kernels' barriers, after the shared-memory layout L's tiles (at L::bars): k / v full
// and empty for the two run buffers, q full and empty for the L::kStages stages.
template <typename L>
struct BandBars {
  uint64_t* kv_full;  // [2]
  uint64_t* kv_empty;
  uint64_t* q_full;   // [L::kStages]
  uint64_t* q_empty;
  static constexpr int kCount = 4 + 2 * L::kStages;

  __device__ __forceinline__ explicit BandBars(char* base)
      : kv_full(reinterpret_cast<uint64_t*>(base + L::bars)),
        kv_empty(kv_full + 2),
        q_full(kv_empty + 2),
        q_empty(q_full + L::kStages) {}
  // Thread 0, before the block's __syncthreads: every consumer thread releases a run's k / v,
  // and the threads of the warpgroups that read a q stage's 4-head quads release it.
  __device__ __forceinline__ void init() const {
    mbar_init_ring(kv_full, kv_empty, 2, L::kT.consumers * 128);
    mbar_init_ring(q_full, q_empty, L::kStages, L::kT.heads / 4 * 128);
    mbar_fence_init();
  }
};

// The band kernels' producer thread: for each of the block's runs its k / v tile into the run
// buffer (the next run's loads while the consumers finish the one before), then per position
// block its q rows (and dO's, where L::kDout) into the next of L::kStages stages.
template <typename L, typename Items>
__device__ __forceinline__ void band_produce(const sm80::Params& p, const Items& items,
                                             char* base, const BandBars<L>& bars,
                                             const CUtensorMap* map_q, const CUtensorMap* map_k,
                                             const CUtensorMap* map_v,
                                             const CUtensorMap* map_dout) {
  constexpr int S = L::kStages;
  int runs_done = 0, q_done = 0;  // runs and q blocks loaded so far (barrier phases)
  int walk = 0;                   // BandItems::sequence
  for (int64_t item = blockIdx.x; item < items.total; item += gridDim.x) {
    const BandRun run(p, item, items, walk);
    if (run.blocks == 0) continue;
    const sm80::Sequence& seq = run.seq;
    const int bq = seq.varlen ? 0 : (int)seq.b;
    const int rq = (int)(seq.varlen ? seq.row_q : 0), rk = (int)(seq.varlen ? seq.row_k : 0);
    const int kb = runs_done % 2;
    if (runs_done >= 2) mbar_wait(&bars.kv_empty[kb], ((runs_done / 2) & 1) ^ 1);
    mbar_expect_tx(&bars.kv_full[kb], 2 * L::kKVBytes);
    tma_load_4d(base + L::k + kb * L::kKVBytes, map_k, &bars.kv_full[kb], 0, rk + (int)run.key0,
                (int)run.hk, bq);
    tma_load_4d(base + L::v + kb * L::kKVBytes, map_v, &bars.kv_full[kb], 0, rk + (int)run.key0,
                (int)run.hk, bq);
    ++runs_done;
    for (int j = 0; j < run.blocks; ++j, ++q_done) {
      const int s = q_done % S;
      const int row = rq + (int)(run.r0 + 16 * j);
      if (q_done >= S) mbar_wait(&bars.q_empty[s], ((q_done / S) & 1) ^ 1);
      mbar_expect_tx(&bars.q_full[s], (L::kDout ? 2 : 1) * L::kQBytes);
      tma_load_4d(base + L::q + s * L::kQBytes, map_q, &bars.q_full[s], 0, row, (int)run.h0, bq);
      if constexpr (L::kDout)
        tma_load_4d(base + L::dout + s * L::kQBytes, map_dout, &bars.q_full[s], 0, row,
                    (int)run.h0, bq);
    }
  }
}

// The band kernels' start: thread 0 initialises the barriers; warpgroup 0 hands its registers
// back and its thread 0 runs the producer. Returns the calling thread's warpgroup index (through
// a shuffle, so the compiler knows it is warp-uniform); the producer's, 0, then returns.
template <typename L, typename Items>
__device__ __forceinline__ int band_start(const sm80::Params& p, const Items& items,
                                          char* base, const BandBars<L>& bars,
                                          const CUtensorMap* map_q, const CUtensorMap* map_k,
                                          const CUtensorMap* map_v, const CUtensorMap* map_dout) {
  if (threadIdx.x == 0) bars.init();
  __syncthreads();
  const int wg = __shfl_sync(0xffffffff, (int)threadIdx.x / 128, 0);
  if (wg == 0) {
    regs_dealloc<L::kT.producer_regs>();
    if (threadIdx.x == 0) band_produce<L>(p, items, base, bars, map_q, map_k, map_v, map_dout);
  }
  return wg;
}

// Sets the hidden scores of a block's span (starting at key span0) to -inf. Row r = g + 8h of
// the warp sits at position pos(m0) + r, so it sees span columns [r, r + lr] (lr = left +
// right), cut to the keys [0, len_k). Away from the sequence's ends a window of 128 (lr = 127)
// cuts only n-tiles 0, 1 (the columns before row 15's first) and 16, 17 (after row 0's last);
// the other spans take the general per-element test. (I: the key index type, 32-bit where the
// caller holds its keys so.)
template <int NT, typename I>
__device__ __forceinline__ void mask_band_span(float (&sc)[NT][4], I span0, I len_k, int lr,
                                               int lane) {
  constexpr int kSpan = band_tile().span;
  const int first = (int)max(I{-1}, min(-span0, (I)kSpan));
  const int last = (int)max(I{-1}, min(len_k - 1 - span0, (I)kSpan));
  const int g = lane / 4, t = lane % 4;
  if (lr == 127 && first <= 0 && last >= kSpan - 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const uint32_t cols = cuda::fragment_cols(g + 8 * h, g + 8 * h + 127, t, e);
#pragma unroll
        for (int n = 0; n < NT; ++n)
          if ((n < 2 || 8 * n + 7 > 127) && !(cols & (1u << n))) sc[n][2 * h + e] = -INFINITY;
      }
  } else {
#pragma unroll
    for (int h = 0; h < 2; ++h)
      sm80::mask_row(sc, h, max(g + 8 * h, first), min(g + 8 * h + lr, last), lane);
  }
}

}  // namespace sinkattn::cuda::sm90
