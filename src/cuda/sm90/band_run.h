// What the GQA-packed band kernels (fwd_band_kernel.h, bwd_band_dq_kernel.h) share: the work
// item (a run of 16-position blocks of 8 query heads) and the mask of a block's key span.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/fragment_cols.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm90/tile_size.h"

namespace sinkattn::cuda::sm90 {

// The band kernels' work items: (kv head x group of BandTile::heads query heads, run, sequence),
// heads fastest; a persistent block takes items blockIdx.x, blockIdx.x + gridDim.x, ...
struct BandItems {
  int octets;            // groups of BandTile::heads query heads per kv head
  int64_t heads8, runs;  // kv heads x octets; runs per sequence (band_runs)
  int64_t total;         // items of the whole problem

  __device__ __forceinline__ explicit BandItems(const sm80::Params& p)
      : octets(p.group / band_tile().heads),
        heads8(p.heads_kv * octets),
        runs(band_runs(p.seqlen_q)),
        total(heads8 * runs * p.batch) {}
};

// One run: its sequence and rows, heads, and the key of its k / v tile's row 0 (the window
// start of its first position; position block j's span starts 16 j rows further, positions
// advancing by one per row: no zigzag here). Keys outside [0, len_k) are masked: TMA reads
// zeros before row 0 and past the last, a packed neighbour's rows in between.
struct BandRun {
  sm80::Sequence seq;
  int64_t r0, hk, h0, key0;  // first row; kv head; first query head; key of the tile's row 0
  int blocks;                // 16-row position blocks (0: the sequence has no rows here)

  __device__ __forceinline__ BandRun(const sm80::Params& p, int64_t item, const BandItems& it)
      : seq(p, item / (it.heads8 * it.runs)) {
    constexpr int kRun = band_tile().run;
    const int64_t x = item % it.heads8;
    r0 = (item / it.heads8) % it.runs * 16 * kRun;
    hk = x / it.octets;
    h0 = hk * p.group + x % it.octets * band_tile().heads;
    key0 = cuda::Mask::of(p, seq).pos(r0) - p.window_left;
    blocks = r0 < seq.len_q ? (int)min((int64_t)kRun, (seq.len_q - r0 + 15) / 16) : 0;
  }
};

// Sets the hidden scores of a block's span (starting at key span0) to -inf. Row r = g + 8h of
// the warp sits at position pos(m0) + r, so it sees span columns [r, r + lr] (lr = left +
// right), cut to the keys [0, len_k). Away from the sequence's ends a window of 128 (lr = 127)
// cuts only n-tiles 0, 1 (the columns before row 15's first) and 16, 17 (after row 0's last);
// the other spans take the general per-element test.
template <int NT>
__device__ __forceinline__ void mask_band_span(float (&sc)[NT][4], int64_t span0, int64_t len_k,
                                               int lr, int lane) {
  constexpr int kSpan = band_tile().span;
  const int first = (int)max(int64_t{-1}, min(-span0, (int64_t)kSpan));
  const int last = (int)max(int64_t{-1}, min(len_k - 1 - span0, (int64_t)kSpan));
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
