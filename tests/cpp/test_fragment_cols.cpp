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

}  // namespace
}  // namespace sinkattn_test
