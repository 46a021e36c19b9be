// The visibility rule and the block ranges it implies. Query i of a sequence sits at key
// position pos(i): i + len_k - len_q (bottom-right alignment), or, for fused zigzag context
// parallelism, i + shift_lo for rows below `split` (chunk r) and i + shift_hi from there on
// (chunk 2W-1-r). Key j is visible iff 0 <= j < len_k and pos - left <= j <= pos + right (each
// bound only when >= 0). pos is increasing in i in both cases, so a row range sees one key range
// and a key range is seen by one row range; a query tile across the two zigzag chunks gets the
// range covering both pieces (under a window its middle is masked per element). Blocks wholly
// visible skip the per-element test; blocks wholly invisible are never visited, so a window costs
// its width. Build masks with Mask::of(params, sequence) so the zigzag mapping is never missed.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/fragment_cols.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"

namespace sinkattn::cuda::sm80 {

struct Mask {
  int64_t len_q, len_k, left, right;  // left/right: -1 = unbounded
  int64_t split = 0;                  // rows below sit at i + shift_lo, the others at i + shift_hi
  int64_t shift_lo = len_k - len_q;
  int64_t shift_hi = len_k - len_q;

  // The mask of one sequence: bottom-right aligned, or zigzag when p.zigzag_world > 0 (the host
  // checked 0 <= rank < world; odd or mismatched varlen lengths only move positions, every key
  // index stays clamped to [0, len_k)).
  __device__ __forceinline__ static Mask of(const Params& p, const Sequence& seq) {
    Mask m{seq.len_q, seq.len_k, p.window_left, p.window_right};
    if (p.zigzag_world > 0) {
      const int64_t c = seq.len_q / 2;
      m.split = c;
      m.shift_lo = int64_t{p.zigzag_rank} * c;
      m.shift_hi = (2 * int64_t{p.zigzag_world} - 2 - p.zigzag_rank) * c;
    }
    return m;
  }

  // Bottom-right shift len_k - len_q (the position of row i without zigzag is i + shift()).
  __device__ __forceinline__ int64_t shift() const { return len_k - len_q; }

  // Key position of query row i (rows past len_q continue the last chunk).
  __device__ __forceinline__ int64_t pos(int64_t i) const {
    return i + (i < split ? shift_lo : shift_hi);
  }

  // Number of query rows whose position is below x, i.e. the first row at position >= x.
  __device__ __forceinline__ int64_t rows_below(int64_t x) const {
    return min(max(x - shift_lo, int64_t{0}), split) +
           min(max(x - shift_hi, split), len_q) - split;
  }

  // Keys [lo, hi) that any query of rows [m0, m1) can see (empty: lo >= hi).
  __device__ __forceinline__ void key_range(int64_t m0, int64_t m1, int64_t& lo,
                                            int64_t& hi) const {
    lo = left < 0 ? 0 : max(int64_t{0}, pos(m0) - left);
    hi = right < 0 ? len_k : min(len_k, pos(m1 - 1) + right + 1);
  }

  // Queries [lo, hi) that see any key of rows [n0, n1) (every row in between sees one).
  __device__ __forceinline__ void query_range(int64_t n0, int64_t n1, int64_t& lo,
                                              int64_t& hi) const {
    lo = right < 0 ? 0 : rows_below(n0 - right);
    hi = left < 0 ? len_q : rows_below(n1 + left);
  }

  // Visible columns [lo, hi] of query row i inside the key block starting at n0, as block-local
  // 32-bit indices clamped to [-1, bn] (so per-element tests are two int compares).
  __device__ __forceinline__ void row_bounds(int64_t i, int64_t n0, int bn, int& lo,
                                             int& hi) const {
    const int64_t p = pos(i);
    int64_t a = left < 0 ? 0 : p - left - n0;
    int64_t b = min(len_k - 1, right < 0 ? len_k - 1 : p + right) - n0;
    lo = (int)max(int64_t{-1}, min(a, (int64_t)bn));
    hi = (int)max(int64_t{-1}, min(b, (int64_t)bn));
  }

  // Query rows [first, last] that see key j (none when first > last): query i sees j iff
  // j - right <= pos(i) <= j + left (each bound only when set), and j < len_k.
  __device__ __forceinline__ void key_rows(int64_t j, int64_t& first, int64_t& last) const {
    first = right < 0 ? 0 : rows_below(j - right);
    last = j >= len_k ? -1 : left < 0 ? len_q - 1 : rows_below(j + left + 1) - 1;
  }

  // Query rows [first, last] that see every key of [n0, n1) (none when first > last).
  __device__ __forceinline__ void full_rows(int64_t n0, int64_t n1, int64_t& first,
                                            int64_t& last) const {
    first = right < 0 ? 0 : rows_below(n1 - 1 - right);
    last = n1 > len_k ? -1 : left < 0 ? len_q - 1 : rows_below(n0 + left + 1) - 1;
  }

  // Visible query columns [lo, hi] of key row j inside the query block starting at m0, as
  // block-local indices clamped to [-1, bm] (key_rows made block-local).
  __device__ __forceinline__ void key_row_bounds(int64_t j, int64_t m0, int bm, int& lo,
                                                 int& hi) const {
    int64_t first, last;
    key_rows(j, first, last);
    lo = (int)max(int64_t{-1}, min(first - m0, (int64_t)bm));
    hi = (int)max(int64_t{-1}, min(last - m0, (int64_t)bm));
  }

  // True when every (query in [m0, m1), key in [n0, n1)) pair is visible. Query rows past
  // len_q are never stored, so they do not force the per-element test.
  __device__ __forceinline__ bool all_visible(int64_t m0, int64_t m1, int64_t n0,
                                              int64_t n1) const {
    m1 = min(m1, len_q);
    return n1 <= len_k && (left < 0 || n0 >= pos(m1 - 1) - left) &&
           (right < 0 || n1 - 1 <= pos(m0) + right);
  }
};

// The mask seen from K fixed key rows (a backward block's, per thread): the query rows that see
// every key of the block, and for each key row the rows that see it, found once as int32 (rows
// < len_q); per query tile only compares remain.
template <int K>
struct KeyRowsMask {
  int full_first, full_last, len_q;
  int first[K], last[K];

  // keys: this thread's key rows; [n0, n1): the block's keys.
  __device__ __forceinline__ KeyRowsMask(const Mask& m, int64_t n0, int64_t n1,
                                         const int64_t (&keys)[K]) {
    int64_t a, z;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      m.key_rows(keys[k], a, z);
      first[k] = (int)a;
      last[k] = (int)z;
    }
    m.full_rows(n0, n1, a, z);
    full_first = (int)a;
    full_last = (int)z;
    len_q = (int)m.len_q;
  }
  // Whether the mask cuts the query rows [m0, m0 + bm) (some pair with the block's keys hidden).
  __device__ __forceinline__ bool cuts(int m0, int bm) const {
    return m0 < full_first || min(m0 + bm, len_q) - 1 > full_last;
  }
  // Key row k's visible query columns [lo, hi] in the tile from m0, clamped to [-1, bm] (as
  // Mask::key_row_bounds).
  __device__ __forceinline__ void bounds(int k, int m0, int bm, int& lo, int& hi) const {
    lo = max(-1, min(first[k] - m0, bm));
    hi = max(-1, min(last[k] - m0, bm));
  }
};

// Sets the scores of one fragment row (half h of an m-tile: elements 2h, 2h + 1 of each n-tile)
// outside its visible block-local columns [lo, hi] to -inf.
template <int NT>
__device__ __forceinline__ void mask_row(float (&s)[NT][4], int h, int lo, int hi, int lane) {
  static_assert(NT <= 31, "fragment_cols covers 31 n-tiles");
  const int t = lane % 4;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const uint32_t cols = cuda::fragment_cols(lo, hi, t, e);
#pragma unroll
    for (int n = 0; n < NT; ++n)
      if (!(cols & (1u << n))) s[n][2 * h + e] = -INFINITY;
  }
}

// Sets masked scores of a warp tile (MT m-tiles from query row m0, keys from n0) to -inf.
template <int MT, int NT>
__device__ __forceinline__ void apply_mask(float (&s)[MT][NT][4], const Mask& mask, int64_t m0,
                                           int64_t n0, int lane) {
  const int g = lane / 4;
#pragma unroll
  for (int r = 0; r < 2 * MT; ++r) {
    int lo, hi;
    mask.row_bounds(m0 + (r / 2) * 16 + (r % 2) * 8 + g, n0, NT * 8, lo, hi);
    mask_row(s[r / 2], r % 2, lo, hi, lane);
  }
}

}  // namespace sinkattn::cuda::sm80
