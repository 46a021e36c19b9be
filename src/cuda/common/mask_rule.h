// The visibility rule and the block ranges it implies. Query i of a sequence sits at key
// position pos(i): i + len_k - len_q (bottom-right alignment), or, for fused zigzag context
// parallelism, i + shift_lo for rows below `split` (chunk r) and i + shift_hi from there on
// (chunk 2W-1-r). Key j is visible iff 0 <= j < len_k and pos - left <= j <= pos + right (each
// bound only when >= 0). pos is increasing in i in both cases, so a row range sees one key range
// and a key range is seen by one row range; a query tile across the two zigzag chunks gets the
// range covering both pieces (under a window its middle is masked per element). Blocks wholly
// visible skip the per-element test; blocks wholly invisible are never visited, so a window costs
// its width. Build masks with Mask::of(params, sequence) so the zigzag mapping is never missed.
// Host and device: the CPU tests check these ranges against the rule itself
// (tests/cpp/test_mask_rule.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/common/host_device.h"

namespace sinkattn::cuda {

// min / max: CUDA's overloads on the device (the kernels' code as it was), std's on the host.
namespace minmax {
#if defined(__CUDA_ARCH__)
using ::max;
using ::min;
#else
using std::max;
using std::min;
#endif
}  // namespace minmax
template <typename T>
SINKATTN_HOST_DEVICE T imin(T a, T b) { return minmax::min(a, b); }
template <typename T>
SINKATTN_HOST_DEVICE T imax(T a, T b) { return minmax::max(a, b); }

struct Mask {
  int64_t len_q, len_k, left, right;  // left/right: -1 = unbounded
  int64_t split = 0;                  // rows below sit at i + shift_lo, the others at i + shift_hi
  int64_t shift_lo = len_k - len_q;
  int64_t shift_hi = len_k - len_q;

  // The mask of one sequence: bottom-right aligned, or zigzag when p.zigzag_world > 0 (the host
  // checked 0 <= rank < world; odd or mismatched varlen lengths only move positions, every key
  // index stays clamped to [0, len_k)).
  template <typename P, typename S>  // sm80::Params, sm80::Sequence
  SINKATTN_HOST_DEVICE static Mask of(const P& p, const S& seq) {
    Mask m{seq.len_q, seq.len_k, p.window_left, p.window_right};
    if (p.zigzag_world > 0) {
      const int64_t c = seq.len_q / 2;
      m.split = c;
      m.shift_lo = int64_t{p.zigzag_rank} * c;
      m.shift_hi = (2 * int64_t{p.zigzag_world} - 2 - p.zigzag_rank) * c;
    }
    return m;
  }

  // Key position of query row i (rows past len_q continue the last chunk).
  SINKATTN_HOST_DEVICE int64_t pos(int64_t i) const {
    return i + (i < split ? shift_lo : shift_hi);
  }

  // Number of query rows whose position is below x, i.e. the first row at position >= x.
  SINKATTN_HOST_DEVICE int64_t rows_below(int64_t x) const {
    return imin(imax(x - shift_lo, int64_t{0}), split) +
           imin(imax(x - shift_hi, split), len_q) - split;
  }

  // Keys [lo, hi) that any query of rows [m0, m1) can see (empty: lo >= hi).
  SINKATTN_HOST_DEVICE void key_range(int64_t m0, int64_t m1, int64_t& lo, int64_t& hi) const {
    lo = left < 0 ? 0 : imax(int64_t{0}, pos(m0) - left);
    hi = right < 0 ? len_k : imin(len_k, pos(m1 - 1) + right + 1);
  }

  // Queries [lo, hi) that see any key of rows [n0, n1) (every row in between sees one).
  SINKATTN_HOST_DEVICE void query_range(int64_t n0, int64_t n1, int64_t& lo, int64_t& hi) const {
    lo = right < 0 ? 0 : rows_below(n0 - right);
    hi = left < 0 ? len_q : rows_below(n1 + left);
  }

  // Visible columns [lo, hi] of query row i inside the key block starting at n0, as block-local
  // 32-bit indices clamped to [-1, bn] (so per-element tests are two int compares).
  SINKATTN_HOST_DEVICE void row_bounds(int64_t i, int64_t n0, int bn, int& lo, int& hi) const {
    const int64_t p = pos(i);
    int64_t a = left < 0 ? 0 : p - left - n0;
    int64_t b = imin(len_k - 1, right < 0 ? len_k - 1 : p + right) - n0;
    lo = (int)imax(int64_t{-1}, imin(a, (int64_t)bn));
    hi = (int)imax(int64_t{-1}, imin(b, (int64_t)bn));
  }

  // Query rows [first, last] that see key j (none when first > last): query i sees j iff
  // j - right <= pos(i) <= j + left (each bound only when set), and j < len_k.
  SINKATTN_HOST_DEVICE void key_rows(int64_t j, int64_t& first, int64_t& last) const {
    first = right < 0 ? 0 : rows_below(j - right);
    last = j >= len_k ? -1 : left < 0 ? len_q - 1 : rows_below(j + left + 1) - 1;
  }

  // Query rows [first, last] that see every key of [n0, n1) (none when first > last).
  SINKATTN_HOST_DEVICE void full_rows(int64_t n0, int64_t n1, int64_t& first, int64_t& last) const {
    first = right < 0 ? 0 : rows_below(n1 - 1 - right);
    last = n1 > len_k ? -1 : left < 0 ? len_q - 1 : rows_below(n0 + left + 1) - 1;
  }

  // Query rows [first, last] that see some key of [n0, n1), n0 < len_k, under one band (no
  // zigzag): a row's keys move right with the row, so the first row that sees n0 and the last
  // that sees the block's last key in the sequence bound them (a superset where n0 is seen by
  // nobody).
  SINKATTN_HOST_DEVICE void band_rows(int64_t n0, int64_t n1, int64_t& first, int64_t& last) const {
    int64_t unused;
    key_rows(n0, first, unused);
    key_rows(imin(n1 - 1, len_k - 1), unused, last);
  }

  // Visible query columns [lo, hi] of key row j inside the query block starting at m0, as
  // block-local indices clamped to [-1, bm] (key_rows made block-local).
  SINKATTN_HOST_DEVICE void key_row_bounds(int64_t j, int64_t m0, int bm, int& lo, int& hi) const {
    int64_t first, last;
    key_rows(j, first, last);
    lo = (int)imax(int64_t{-1}, imin(first - m0, (int64_t)bm));
    hi = (int)imax(int64_t{-1}, imin(last - m0, (int64_t)bm));
  }

  // True when every (query in [m0, m1), key in [n0, n1)) pair is visible. Query rows past
  // len_q are never stored, so they do not force the per-element test.
  SINKATTN_HOST_DEVICE bool all_visible(int64_t m0, int64_t m1, int64_t n0, int64_t n1) const {
    m1 = imin(m1, len_q);
    return n1 <= len_k && (left < 0 || n0 >= pos(m1 - 1) - left) &&
           (right < 0 || n1 - 1 <= pos(m0) + right);
  }
};

// Window bounds cut to the lengths they can reach: a left bound of at least len_k - 1 (no
// query sits past the last key) or a right bound of at least len_q - 1 (none sits before
// len_k - len_q) hides nothing, so it and an unbounded one (-1) become those lengths less one;
// narrower bounds stay. Every sequence of at most max_q queries and max_k keys then sees what it
// saw, under bottom-right alignment (zigzag moves the positions: not for it). The dispatch takes
// the cut bounds where they let a narrow-window kernel run (causal short documents).
struct WindowBounds {
  int64_t left, right;
};
SINKATTN_HOST_DEVICE WindowBounds cut_window(int64_t left, int64_t right, int64_t max_q,
                                             int64_t max_k) {
  if (max_q < 1 || max_k < 1) return {left, right};
  return {left < 0 || left > max_k - 1 ? max_k - 1 : left,
          right < 0 || right > max_q - 1 ? max_q - 1 : right};
}

// The key blocks (bn keys each, from key 0) that a block of query rows [m0, m0 + bm) walks:
// [first, end), every block holding a key one of its rows sees (first == end: none). I: int or
// int64_t, as the caller indexes its blocks.
template <typename I>
struct KeyBlocks {
  I first, end;
};
template <typename I>
SINKATTN_HOST_DEVICE KeyBlocks<I> walked_key_blocks(const Mask& m, int64_t m0, int bm, int bn) {
  int64_t lo, hi;
  m.key_range(m0, m0 + bm, lo, hi);
  const I first = (I)(lo / bn);
  return {first, hi > lo ? (I)((hi + bn - 1) / bn) : first};
}

// The query blocks (bm rows each, from the sequence's row 0) that a backward block of keys
// [n0, n0 + bn), n0 < len_k, walks: [first, first + count), every block holding a row that sees
// one of its keys (count 0: none).
SINKATTN_HOST_DEVICE void walked_query_blocks(const Mask& m, int64_t n0, int bn, int bm,
                                              int& first, int& count) {
  int64_t lo, hi;
  m.query_range(n0, n0 + bn, lo, hi);
  first = (int)(lo / bm);
  count = hi > lo ? (int)((hi + bm - 1) / bm) - first : 0;
}

// Which halves of the query step [m0, m0 + 2 half) hold a row of [first, last]: bit 0 the first
// half, bit 1 the second (the narrow Hopper dK / dV-only walk skips the halves its keys miss).
SINKATTN_HOST_DEVICE int step_halves(int64_t m0, int half, int64_t first, int64_t last) {
  return (m0 <= last && m0 + (half - 1) >= first ? 1 : 0) |
         (m0 + half <= last && m0 + (2 * half - 1) >= first ? 2 : 0);
}

// Key block nb's turn in the dq handoff of the narrow-window Hopper backward (sm90/bwd_kernel.h):
// the key blocks that walk query block mb pass its dq partial on in key order, so nb waits for
// `prior` blocks before it and is `last` when none follows. One band only: there the blocks
// walking mb are exactly those holding a key one of its rows (inside len_q) sees, a contiguous
// run; under zigzag they need not be. nb must walk mb.
struct DqTurn {
  int prior;
  bool last;
};
SINKATTN_HOST_DEVICE DqTurn dq_turn(const Mask& m, int64_t nb, int bn, int bm, int64_t mb) {
  const int64_t m0 = mb * bm;
  const int rows = (int)imin(int64_t{bm}, m.len_q - m0);  // the last block's inside len_q
  const KeyBlocks<int64_t> walk = walked_key_blocks<int64_t>(m, m0, rows, bn);
  return {(int)(nb - walk.first), nb + 1 == walk.end};
}

// The mask seen from K fixed key rows (a backward block's, per thread): the query rows that see
// every key of the block, and for each key row the rows that see it, found once as int32 (rows
// < len_q); per query tile only compares remain.
template <int K>
struct KeyRowsMask {
  int full_first, full_last, len_q;
  int first[K], last[K];

  // keys: this thread's key rows; [n0, n1): the block's keys.
  SINKATTN_HOST_DEVICE KeyRowsMask(const Mask& m, int64_t n0, int64_t n1,
                                   const int64_t (&keys)[K]) {
    int64_t a, z;
    SINKATTN_UNROLL
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
  SINKATTN_HOST_DEVICE bool cuts(int m0, int bm) const {
    return m0 < full_first || imin(m0 + bm, len_q) - 1 > full_last;
  }
  // Key row k's visible query columns [lo, hi] in the tile from m0, clamped to [-1, bm] (as
  // Mask::key_row_bounds).
  SINKATTN_HOST_DEVICE void bounds(int k, int m0, int bm, int& lo, int& hi) const {
    lo = imax(-1, imin(first[k] - m0, bm));
    hi = imax(-1, imin(last[k] - m0, bm));
  }
};

// The tile's mask as int32 relative to its first row m0 and first key n0 (persistent kernels:
// windows under 1024 keys, rows and keys of one sequence): row i (from m0) sits at key position
// i + (i < split ? p_lo : p_hi) from n0 and sees keys [p - left, imin(kmax, p + right)] (left or
// right < 0: unbounded), as Mask::row_bounds, without its 64-bit arithmetic per row.
struct RowMask32 {
  int32_t p_lo, p_hi, split, left, right, kmax;

  SINKATTN_HOST_DEVICE static RowMask32 of(const Mask& m, int64_t m0, int64_t n0, int bm) {
    constexpr int64_t kFar = int64_t{1} << 30;  // beyond any tile: clamps like unbounded
    RowMask32 r;
    r.p_lo = (int32_t)(m0 + m.shift_lo - n0);
    r.p_hi = (int32_t)(m0 + m.shift_hi - n0);
    r.split = (int32_t)imax(int64_t{0}, imin(m.split - m0, (int64_t)bm));
    r.left = (int32_t)imin(m.left, kFar);
    r.right = (int32_t)imin(m.right, kFar);
    r.kmax = (int32_t)imin(m.len_k - 1 - n0, kFar);
    return r;
  }
  // Visible columns [lo, hi] of row i among the ncols keys from n0 + c0, clamped to [-1, ncols].
  SINKATTN_HOST_DEVICE void bounds(int i, int c0, int ncols, int& lo, int& hi) const {
    const int p = i + (i < split ? p_lo : p_hi);
    const int a = left < 0 ? 0 : p - left;
    const int b = imin(kmax, right < 0 ? kmax : p + right);
    lo = imax(-1, imin(a - c0, ncols));
    hi = imax(-1, imin(b - c0, ncols));
  }
};

}  // namespace sinkattn::cuda
