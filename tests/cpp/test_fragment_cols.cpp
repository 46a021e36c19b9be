// cuda::fragment_cols, the bit mask the kernels test each score's visibility with: on the host
// (the header is host and device, so this is the code the kernels compile), against the plain
// definition for every range a row can have and every lane column.
#include <gtest/gtest.h>

#include <cstdint>

#include "cuda/common/fragment_cols.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::fragment_cols;

TEST(FragmentCols, EveryRangeAndLaneColumn) {
  constexpr int kTiles = 31;  // the most n-tiles the mask covers
  int checked = 0;
  for (int lo = -1; lo <= 8 * kTiles; ++lo)
    for (int hi = -1; hi <= 8 * kTiles; ++hi)
      for (int t = 0; t < 4; ++t)
        for (int e = 0; e < 2; ++e) {
          uint32_t want = 0;
          for (int n = 0; n < kTiles; ++n) {
            const int col = 8 * n + 2 * t + e;
            if (lo <= col && col <= hi) want |= 1u << n;
          }
          const uint32_t got = fragment_cols(lo, hi, t, e) & ((1u << kTiles) - 1u);
          ASSERT_EQ(got, want) << "lo " << lo << " hi " << hi << " t " << t << " e " << e;
          ++checked;
        }
  EXPECT_EQ(checked, 250 * 250 * 8);
}

TEST(FragmentCols, EmptyAndFullRanges) {
  EXPECT_EQ(fragment_cols(-1, -1, 0, 0), 0u);   // a row that sees nothing
  EXPECT_EQ(fragment_cols(5, 4, 1, 1), 0u);     // lo > hi
  EXPECT_EQ(fragment_cols(0, 127, 0, 0), 0xffffu);  // a whole 128-key block: 16 n-tiles
  EXPECT_EQ(fragment_cols(0, 127, 3, 1), 0xffffu);
  // Bounds clamped past both ends of a 128-key block: column 128 is n-tile 16's first (t = 0).
  EXPECT_EQ(fragment_cols(-1, 128, 0, 0), 0x1ffffu);
  EXPECT_EQ(fragment_cols(-1, 128, 2, 0), 0xffffu);
}

// The band forward (sm90/fwd_band_kernel.h) masks a window-128 span of 144 keys only on n-tiles
// 0, 1, 16 and 17 when the span lies inside the sequence: row r (0..15) sees span columns
// [r, r + 127], so every other n-tile must be whole for every row, lane column and element.
TEST(FragmentCols, Window128SpanIsCutOnlyOnItsEdgeTiles) {
  constexpr uint32_t kSpan = (1u << 18) - 1u, kEdges = 0x3u | (0x3u << 16);
  for (int r = 0; r < 16; ++r)
    for (int t = 0; t < 4; ++t)
      for (int e = 0; e < 2; ++e) {
        const uint32_t hidden = ~fragment_cols(r, r + 127, t, e) & kSpan;
        EXPECT_EQ(hidden & ~kEdges, 0u) << "row " << r << " t " << t << " e " << e;
      }
  // ... and the edge tiles are cut: by the last row's start (0, 1) and the first row's end (16, 17).
  EXPECT_NE(~fragment_cols(15, 15 + 127, 0, 0) & 0x3u, 0u);
  EXPECT_NE(~fragment_cols(0, 127, 0, 0) & (0x3u << 16), 0u);
}

}  // namespace
}  // namespace sinkattn_test
