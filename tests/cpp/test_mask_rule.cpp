// cuda::Mask and cuda::KeyRowsMask, the block ranges every kernel walks by (which key blocks a
// query tile visits, which query steps a key block takes, which tiles skip the per-element test,
// each row's visible columns): on the host (the header is host and device, so this is the code
// the kernels compile), against the visibility rule of include/sinkattn/sinkattn.h computed here
// pair by pair, over lengths, windows and zigzag ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/common/mask_rule.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::KeyRowsMask;
using sinkattn::cuda::Mask;
using sinkattn::cuda::RowMask32;
using sinkattn::cuda::step_halves;
using sinkattn::cuda::cut_window;
using sinkattn::cuda::WindowBounds;

struct Case {
  int64_t len_q, len_k, left, right;
  int32_t rank, world;  // world 0: bottom-right alignment
};

// The fields Mask::of reads (as sm80::Params and sm80::Sequence name them).
struct P {
  int64_t window_left, window_right;
  int32_t zigzag_rank, zigzag_world;
};
struct S {
  int64_t len_q, len_k;
};

// The rule, from the public header: the key position of query row i, and whether it sees key j.
int64_t position(const Case& c, int64_t i) {
  if (c.world == 0) return i + c.len_k - c.len_q;
  const int64_t half = c.len_q / 2;
  return i < half ? c.rank * half + i : (2 * c.world - 1 - c.rank) * half + i - half;
}
bool sees(const Case& c, int64_t i, int64_t j) {
  const int64_t p = position(c, i);
  return j >= 0 && j < c.len_k && (c.left < 0 || j >= p - c.left) && (c.right < 0 || j <= p + c.right);
}
// Whether some query of rows [i0, i1) sees some key of [j0, j1) (both clipped to the sequence).
bool block_sees(const Case& c, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  for (int64_t i = i0; i < std::min(c.len_q, i1); ++i)
    for (int64_t j = j0; j < std::min(c.len_k, j1); ++j)
      if (sees(c, i, j)) return true;
  return false;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const int64_t windows[] = {-1, 0, 1, 5, 31};
  for (auto [lq, lk] : {std::pair<int64_t, int64_t>{1, 1}, {7, 7}, {33, 50}, {40, 21}, {64, 64}})
    for (int64_t left : windows)
      for (int64_t right : {int64_t{-1}, int64_t{0}, int64_t{3}}) out.push_back({lq, lk, left, right, 0, 0});
  for (auto [rank, world] : {std::pair<int32_t, int32_t>{0, 1}, {0, 2}, {1, 2}, {1, 4}, {3, 4}})
    for (int64_t left : windows)
      for (int64_t right : {int64_t{-1}, int64_t{0}}) out.push_back({24, 24 * world, left, right, rank, world});
  return out;
}

std::string describe(const Case& c) {
  return "len_q " + std::to_string(c.len_q) + " len_k " + std::to_string(c.len_k) + " left " +
         std::to_string(c.left) + " right " + std::to_string(c.right) + " rank " +
         std::to_string(c.rank) + " world " + std::to_string(c.world);
}

Mask mask_of(const Case& c) {
  return Mask::of(P{c.left, c.right, c.rank, c.world}, S{c.len_q, c.len_k});
}

TEST(MaskRule, RowAndKeyRanges) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int64_t x = -3; x <= c.len_k + 3; ++x) {  // rows_below: the first row at position >= x
      int64_t below = 0;
      for (int64_t i = 0; i < c.len_q; ++i) below += position(c, i) < x;
      ASSERT_EQ(m.rows_below(x), below) << "x " << x;
    }
    for (int64_t j = 0; j < c.len_k + 2; ++j) {  // key_rows: exactly the rows that see key j
      int64_t first, last;
      m.key_rows(j, first, last);
      for (int64_t i = 0; i < c.len_q; ++i)
        ASSERT_EQ(sees(c, i, j), i >= first && i <= last) << "key " << j << " row " << i;
    }
    for (int64_t i = 0; i < c.len_q; ++i)  // row_bounds: the visible columns of row i
      for (int64_t n0 = 0; n0 < c.len_k; n0 += 8) {
        int lo, hi;
        m.row_bounds(i, n0, 16, lo, hi);
        for (int col = 0; col < 16; ++col)
          ASSERT_EQ(sees(c, i, n0 + col), col >= lo && col <= hi) << "row " << i << " n0 " << n0;
      }
  }
}

TEST(MaskRule, BlockRangesCoverEveryVisiblePair) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int64_t m0 = 0; m0 < c.len_q; m0 += 5)
      for (int64_t m1 = m0 + 1; m1 <= std::min(c.len_q, m0 + 12); ++m1) {
        int64_t lo, hi;  // key_range: every key that rows [m0, m1) see
        m.key_range(m0, m1, lo, hi);
        for (int64_t i = m0; i < m1; ++i)
          for (int64_t j = 0; j < c.len_k; ++j)
            if (sees(c, i, j)) {
              ASSERT_TRUE(j >= lo && j < hi) << "rows " << m0 << ".." << m1;
            }
        for (int64_t n0 = 0; n0 < c.len_k; n0 += 4)
          for (int64_t n1 = n0 + 1; n1 <= n0 + 9; ++n1) {  // all_visible, and past len_k
            bool all = true;
            for (int64_t i = m0; i < m1; ++i)
              for (int64_t j = n0; j < n1; ++j) all = all && sees(c, i, j);
            ASSERT_EQ(m.all_visible(m0, m1, n0, n1), all) << m0 << ".." << m1 << " x " << n0 << ".." << n1;
          }
      }
    for (int64_t n0 = 0; n0 < c.len_k; n0 += 3)
      for (int64_t n1 = n0 + 1; n1 <= n0 + 10; ++n1) {
        int64_t lo, hi;  // query_range: every row that sees a key of [n0, n1)
        m.query_range(n0, n1, lo, hi);
        int64_t first, last;  // full_rows: exactly the rows that see all of [n0, n1)
        m.full_rows(n0, n1, first, last);
        for (int64_t i = 0; i < c.len_q; ++i) {
          bool any = false, all = true;
          for (int64_t j = n0; j < n1; ++j) any = any || sees(c, i, j), all = all && sees(c, i, j);
          if (any) {
            ASSERT_TRUE(i >= lo && i < hi) << "keys " << n0 << ".." << n1 << " row " << i;
          }
          ASSERT_EQ(all, i >= first && i <= last) << "keys " << n0 << ".." << n1 << " row " << i;
        }
      }
  }
}

// The query blocks a backward key block walks: every block holding a row that sees one of its
// keys (a block walked for nothing costs time only), exactly those under one band.
TEST(MaskRule, WalkedQueryBlocksHoldEveryVisiblePair) {
  using sinkattn::cuda::walked_query_blocks;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int bn : {1, 4, 16})
      for (int bm : {1, 3, 8}) {
        for (int64_t n0 = 0; n0 < c.len_k; n0 += bn) {
          int first, count;
          walked_query_blocks(m, n0, bn, bm, first, count);
          ASSERT_GE(count, 0);
          for (int64_t mb = 0; mb * bm < c.len_q; ++mb) {
            const bool any = block_sees(c, mb * bm, (mb + 1) * bm, n0, n0 + bn);
            const bool walked = mb >= first && mb < first + count;
            if (c.world == 0) {  // one band: the walk is exact
              ASSERT_EQ(walked, any) << "bn " << bn << " bm " << bm << " keys " << n0 << " rows " << mb * bm;
            } else if (any) {  // zigzag: one range covering both chunks' rows
              ASSERT_TRUE(walked) << "bn " << bn << " bm " << bm << " keys " << n0 << " rows " << mb * bm;
            }
          }
        }
      }
  }
}

// The key blocks a forward or dq query block walks: every block holding a key one of its rows
// sees, exactly those under one band (the rows past len_q of a last, partial block included in
// the range, as the kernels pass it).
TEST(MaskRule, WalkedKeyBlocksHoldEveryVisiblePair) {
  using sinkattn::cuda::walked_key_blocks;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int bm : {1, 3, 8})
      for (int bn : {1, 4, 16})
        for (int64_t m0 = 0; m0 < c.len_q; m0 += bm) {
          const auto walk = walked_key_blocks<int64_t>(m, m0, bm, bn);
          ASSERT_LE(walk.first, walk.end);
          for (int64_t nb = 0; nb * bn < c.len_k; ++nb) {
            const bool any = block_sees(c, m0, m0 + bm, nb * bn, (nb + 1) * bn);
            const bool walked = nb >= walk.first && nb < walk.end;
            if (c.world == 0 && m0 + bm <= c.len_q) {  // one band, whole block: exact
              ASSERT_EQ(walked, any) << "bm " << bm << " bn " << bn << " rows " << m0 << " keys " << nb * bn;
            } else if (any) {
              ASSERT_TRUE(walked) << "bm " << bm << " bn " << bn << " rows " << m0 << " keys " << nb * bn;
            }
          }
        }
  }
}

// The dq handoff's turns: among the key blocks holding a key some row of query block mb sees
// (one band), nb has exactly `prior` before it and none after it when `last`.
TEST(MaskRule, DqTurnCountsTheBlocksBeforeAndAfter) {
  using sinkattn::cuda::dq_turn;
  for (const Case& c : cases()) {
    if (c.world != 0) continue;
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int bn : {1, 4, 16})
      for (int bm : {1, 3, 8, 16})
        for (int64_t mb = 0; mb * bm < c.len_q; ++mb) {
          std::vector<int64_t> walkers;  // brute force, in key order
          for (int64_t nb = 0; nb * bn < c.len_k; ++nb)
            if (block_sees(c, mb * bm, (mb + 1) * bm, nb * bn, (nb + 1) * bn)) walkers.push_back(nb);
          for (size_t k = 0; k < walkers.size(); ++k) {
            const auto t = dq_turn(m, walkers[k], bn, bm, mb);
            ASSERT_EQ(t.prior, (int)k) << "bn " << bn << " bm " << bm << " rows " << mb * bm << " keys " << walkers[k] * bn;
            ASSERT_EQ(t.last, k + 1 == walkers.size()) << "bn " << bn << " bm " << bm << " rows " << mb * bm;
          }
        }
  }
}

TEST(MaskRule, KeyRowsMaskMatchesTheMask) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int64_t n0 = 0; n0 < c.len_k; n0 += 8) {
      const int64_t keys[2] = {n0 + 1, n0 + 6};  // two of a thread's key rows in an 8-key block
      const KeyRowsMask<2> km(m, n0, n0 + 8, keys);
      for (int64_t m0 = 0; m0 < c.len_q; m0 += 4) {
        ASSERT_EQ(km.cuts((int)m0, 8), !m.all_visible(m0, m0 + 8, n0, n0 + 8)) << m0 << " " << n0;
        for (int k = 0; k < 2; ++k) {
          int lo, hi, want_lo, want_hi;
          km.bounds(k, (int)m0, 8, lo, hi);
          m.key_row_bounds(keys[k], m0, 8, want_lo, want_hi);
          ASSERT_EQ(lo, want_lo);
          ASSERT_EQ(hi, want_hi);
        }
      }
    }
  }
}

// The narrow Hopper dK / dV-only walk skips the halves of a query step that none of a
// consumer's keys see (Mask::band_rows, step_halves): a half holding a visible pair of the keys
// always stays, over the one-band cases (no zigzag: the walk takes the halves only there); at
// GPT-OSS's window each consumer of a 128-key block keeps 3 of the 4 halves of its 2 steps.
TEST(MaskRule, StepHalvesKeepEveryVisiblePair) {
  for (const Case& c : cases()) {
    if (c.world != 0) continue;
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int64_t n0 = 0; n0 < c.len_k; n0 += 8) {
      int64_t first, last;
      m.band_rows(n0, n0 + 8, first, last);
      for (int64_t m0 = 0; m0 < c.len_q; m0 += 4) {  // steps of 2 halves of 2 rows
        const int vis = step_halves(m0, 2, first, last);
        for (int h = 0; h < 2; ++h) {
          if (block_sees(c, m0 + 2 * h, m0 + 2 * h + 2, n0, n0 + 8)) {
            ASSERT_TRUE(vis & (1 << h)) << "step " << m0 << " keys " << n0 << " half " << h;
          }
        }
      }
    }
  }
  const Mask w = mask_of(Case{1024, 1024, 127, 0, 0, 0});
  for (int64_t n0 = 128; n0 + 256 <= 1024; n0 += 128) {
    int64_t f0, l0, f1, l1;  // the consumers' keys [n0, n0 + 64) and [n0 + 64, n0 + 128)
    w.band_rows(n0, n0 + 64, f0, l0);
    w.band_rows(n0 + 64, n0 + 128, f1, l1);
    EXPECT_EQ(step_halves(n0, 64, f0, l0), 3);        // step A: both halves
    EXPECT_EQ(step_halves(n0 + 128, 64, f0, l0), 1);  // step B: queries n0 + 192.. miss its keys
    EXPECT_EQ(step_halves(n0, 64, f1, l1), 2);        // step A: queries n0.. n0 + 63 miss them
    EXPECT_EQ(step_halves(n0 + 128, 64, f1, l1), 3);
  }
}

TEST(MaskRule, RowMask32SeesWhatTheMaskSees) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Mask m = mask_of(c);
    for (int64_t m0 = 0; m0 < c.len_q; m0 += 6)
      for (int64_t n0 = 0; n0 < c.len_k; n0 += 8) {  // a tile of 16 rows from (m0, n0)
        const RowMask32 rm = RowMask32::of(m, m0, n0, 16);
        for (int i = 0; i < 16; ++i)
          for (int c0 : {0, 8, 16}) {
            int lo, hi;
            rm.bounds(i, c0, 16, lo, hi);
            for (int col = 0; col < 16; ++col) {
              ASSERT_EQ(col >= lo && col <= hi, sees(c, m0 + i, n0 + c0 + col))
                  << "m0 " << m0 << " n0 " << n0 << " row " << i << " c0 " << c0 << " col " << col;
            }
          }
      }
  }
}

// cut_window: every sequence up to the maximum lengths sees the same keys under the cut bounds
// as under the given ones, and a bound that reached past them is cut to them (so causal
// documents of up to 129 keys become a window of at most 128, the band kernels' width).
TEST(MaskRule, CutWindowHidesWhatTheWindowHid) {
  for (int64_t max_q : {1, 2, 5, 9})
    for (int64_t max_k : {1, 3, 9})
      for (int64_t left = -1; left <= 12; ++left)
        for (int64_t right = -1; right <= 12; ++right) {
          const WindowBounds cut = cut_window(left, right, max_q, max_k);
          EXPECT_EQ(cut.left, left >= 0 && left < max_k - 1 ? left : max_k - 1);
          EXPECT_EQ(cut.right, right >= 0 && right < max_q - 1 ? right : max_q - 1);
          for (int64_t lq = 0; lq <= max_q; ++lq)
            for (int64_t lk = 0; lk <= max_k; ++lk) {
              const Case a{lq, lk, left, right, 0, 0}, b{lq, lk, cut.left, cut.right, 0, 0};
              for (int64_t i = 0; i < lq; ++i)
                for (int64_t j = -1; j <= lk; ++j)
                  ASSERT_EQ(sees(b, i, j), sees(a, i, j))
                      << describe(a) << " cut to " << cut.left << " / " << cut.right << " row "
                      << i << " key " << j << " of max " << max_q << " / " << max_k;
            }
        }
  // No lengths: nothing to cut to.
  EXPECT_EQ(cut_window(-1, 0, 0, 5).left, -1);
  EXPECT_EQ(cut_window(-1, 0, 5, 0).left, -1);
}

}  // namespace
}  // namespace sinkattn_test
