// The visibility rule and the block ranges it implies. Query i of a sequence sits at key
// position i + len_k - len_q; key j is visible iff 0 <= j < len_k and
// pos - left <= j <= pos + right (each bound only when >= 0). Blocks wholly visible skip the
// per-element test; blocks wholly invisible are never visited, so a window costs its width.
#pragma once

#include <cmath>
#include <cstdint>

namespace sinkattn::cuda::sm80 {

struct Mask {
  int64_t len_q, len_k, left, right;  // left/right: -1 = unbounded

  __device__ __forceinline__ int64_t shift() const { return len_k - len_q; }

  // Keys [lo, hi) that any query of rows [m0, m1) can see (empty: lo >= hi).
  __device__ __forceinline__ void key_range(int64_t m0, int64_t m1, int64_t& lo,
                                            int64_t& hi) const {
    lo = left < 0 ? 0 : max(int64_t{0}, m0 + shift() - left);
    hi = right < 0 ? len_k : min(len_k, m1 - 1 + shift() + right + 1);
  }

  // Queries [lo, hi) that see any key of rows [n0, n1).
  __device__ __forceinline__ void query_range(int64_t n0, int64_t n1, int64_t& lo,
                                              int64_t& hi) const {
    lo = right < 0 ? 0 : max(int64_t{0}, n0 - right - shift());
    hi = left < 0 ? len_q : min(len_q, n1 - 1 + left - shift() + 1);
  }

  // Visible columns [lo, hi] of query row i inside the key block starting at n0, as block-local
  // 32-bit indices clamped to [-1, bn] (so per-element tests are two int compares).
  __device__ __forceinline__ void row_bounds(int64_t i, int64_t n0, int bn, int& lo,
                                             int& hi) const {
    const int64_t pos = i + shift();
    int64_t a = left < 0 ? 0 : pos - left - n0;
    int64_t b = min(len_k - 1, right < 0 ? len_k - 1 : pos + right) - n0;
    lo = (int)max(int64_t{-1}, min(a, (int64_t)bn));
    hi = (int)max(int64_t{-1}, min(b, (int64_t)bn));
  }

  // Visible query columns [lo, hi] of key row j inside the query block starting at m0, as
  // block-local indices clamped to [-1, bm]: query i sees j iff
  // j - shift - right <= i <= j - shift + left (each bound only when set), and j < len_k.
  __device__ __forceinline__ void key_row_bounds(int64_t j, int64_t m0, int bm, int& lo,
                                                 int& hi) const {
    int64_t a = right < 0 ? 0 : j - shift() - right - m0;
    int64_t b = left < 0 ? (int64_t)bm : j - shift() + left - m0;
    if (j >= len_k) b = -1;
    lo = (int)max(int64_t{-1}, min(a, (int64_t)bm));
    hi = (int)max(int64_t{-1}, min(b, (int64_t)bm));
  }

  // True when every (query in [m0, m1), key in [n0, n1)) pair is visible. Query rows past
  // len_q are never stored, so they do not force the per-element test.
  __device__ __forceinline__ bool all_visible(int64_t m0, int64_t m1, int64_t n0,
                                              int64_t n1) const {
    m1 = min(m1, len_q);
    return n1 <= len_k && (left < 0 || n0 >= m1 - 1 + shift() - left) &&
           (right < 0 || n1 - 1 <= m0 + shift() + right);
  }
};

// Sets masked scores of a warp tile (MT m-tiles from query row m0, keys from n0) to -inf.
template <int MT, int NT>
__device__ __forceinline__ void apply_mask(float (&s)[MT][NT][4], const Mask& mask, int64_t m0,
                                           int64_t n0, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int r = 0; r < 2 * MT; ++r) {
    int lo, hi;
    mask.row_bounds(m0 + (r / 2) * 16 + (r % 2) * 8 + g, n0, NT * 8, lo, hi);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = n * 8 + 2 * t + e;
        if (c < lo || c > hi) s[r / 2][n][(r % 2) * 2 + e] = -INFINITY;
      }
  }
}

}  // namespace sinkattn::cuda::sm80
