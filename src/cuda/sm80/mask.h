// The masks as the kernels apply them to score fragments; the visibility rule and its block
// ranges (Mask, KeyRowsMask) are in cuda/common/mask_rule.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/fragment_cols.h"
#include "cuda/common/mask_rule.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"

namespace sinkattn::cuda::sm80 {

using cuda::KeyBlocks;
using cuda::KeyRowsMask;
using cuda::Mask;

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
