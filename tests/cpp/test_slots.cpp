// The slot numbering of packed sequences (src/cuda/common/slots.h, the code the kernels' grids
// over slots and the band kernels' walk run, here compiled for the host): over random packed
// lists, sequence b's run of slots holds its row blocks and at most one idle slot, every run lies
// below the slot count, every row block of every sequence is named by exactly one slot, and a
// walk over increasing slots finds each slot's sequence as a search from scratch does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "cuda/common/slots.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::PackedRows;

// Packed offsets of `lens` starting at row `lead`; total: the last offset plus `tail` rows.
struct Packed {
  std::vector<int32_t> cu;
  int total;
  PackedRows rows() const { return {cu.data(), (int64_t)cu.size() - 1, total}; }
  int64_t batch() const { return (int64_t)cu.size() - 1; }
  int len(int b) const { return cu[b + 1] - cu[b]; }
};

Packed pack(const std::vector<int>& lens, int lead, int tail) {
  Packed p{{lead}, 0};
  for (int n : lens) p.cu.push_back(p.cu.back() + n);
  p.total = p.cu.back() + tail;
  return p;
}

// Mixes the kernels meet: many tiny documents beside a long one, empty ones, one sequence, a
// run of equal lengths at the block size, random lengths; with and without rows outside them.
std::vector<Packed> lists() {
  std::vector<Packed> out;
  std::mt19937 rng(7);
  for (int lead : {0, 5, 300}) {
    for (int tail : {0, 77}) {
      std::vector<int> tiny;
      for (int i = 0; i < 400; ++i) tiny.push_back(i == 200 ? 3000 : (int)(rng() % 7));
      out.push_back(pack(tiny, lead, tail));
      out.push_back(pack({0, 0, 5, 0}, lead, tail));
      out.push_back(pack({1500}, lead, tail));
      out.push_back(pack(std::vector<int>(20, 128), lead, tail));
      std::vector<int> mixed;
      for (int i = 0; i < 60; ++i) mixed.push_back((int)(rng() % 700));
      out.push_back(pack(mixed, lead, tail));
    }
  }
  return out;
}

constexpr int kRows[] = {64, 128, 192};

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The last b with start(b) <= s, or 0: the sequence that owns slot s.
int owner(const PackedRows& r, int rows, int s) {
  int b = 0;
  for (int c = 1; c < r.batch; ++c)
    if (r.start(c, rows) <= s) b = c;
  return b;
}

TEST(Slots, RunsHoldTheirBlocksAndFitTheCount) {
  for (const Packed& p : lists()) {
    const PackedRows r = p.rows();
    for (int rows : kRows) {
      const int64_t count = sinkattn::cuda::slot_count(p.batch(), p.total, rows);
      EXPECT_GE(r.start(0, rows), 0);
      for (int b = 0; b < p.batch(); ++b) {
        const int run = r.start(b + 1, rows) - r.start(b, rows), needed = ceil_div(p.len(b), rows);
        EXPECT_GE(run, needed) << "sequence " << b << ", " << rows << "-row blocks";
        EXPECT_LE(run, needed + 1) << "sequence " << b << ", " << rows << "-row blocks";
      }
      EXPECT_LE(r.start((int)p.batch(), rows), count) << rows << "-row blocks";
    }
  }
}

TEST(Slots, EveryRowBlockHasOneSlot) {
  for (const Packed& p : lists()) {
    const PackedRows r = p.rows();
    int longest = 0;
    for (int b = 0; b < p.batch(); ++b) longest = std::max(longest, p.len(b));
    for (int rows : kRows) {
      const int64_t blocks = ceil_div(longest, rows);  // a grid row per sequence: the longest's
      std::set<std::pair<int, int64_t>> named;          // (sequence, first row) of each slot
      const int64_t count = sinkattn::cuda::slot_count(p.batch(), p.total, rows);
      for (int s = 0; s < count; ++s) {
        const int b = sinkattn::cuda::slot_owner_from(r, p.batch(), rows, s, 0);
        ASSERT_EQ(b, owner(r, rows, s)) << "slot " << s;
        const int64_t block = sinkattn::cuda::slot_row_block(
            blocks, s - r.start(b, rows), ceil_div(p.len(b), rows));
        if (block < 0) continue;
        ASSERT_LT(block, blocks) << "slot " << s;
        const int64_t m0 = (blocks - 1 - block) * rows;  // as the kernels turn it into rows
        ASSERT_TRUE(named.insert({b, m0}).second) << "slot " << s << " names a block twice";
      }
      std::set<std::pair<int, int64_t>> want;
      for (int b = 0; b < p.batch(); ++b)
        for (int64_t m0 = 0; m0 < p.len(b); m0 += rows) want.insert({b, m0});
      EXPECT_EQ(named, want) << rows << "-row blocks";
    }
  }
}

// A persistent block's items: blockIdx, + gridDim, ... over heads x slots (the band kernels).
TEST(Slots, WalkOverIncreasingSlotsFindsEachOwner) {
  for (const Packed& p : lists()) {
    const PackedRows r = p.rows();
    const int rows = 128, heads = 8;
    const int64_t items = heads * sinkattn::cuda::slot_count(p.batch(), p.total, rows);
    for (int grid : {1, 7, 132}) {
      for (int block = 0; block < grid; ++block) {
        int walk = 0;
        for (int64_t item = block; item < items; item += grid) {
          const int s = (int)(item / heads);
          walk = sinkattn::cuda::slot_owner_from(r, p.batch(), rows, s, walk);
          ASSERT_EQ(walk, owner(r, rows, s)) << "item " << item << ", grid " << grid;
        }
      }
    }
  }
}

// Broken offsets (decreasing, negative, past the rows) still give every slot some sequence and
// rows inside [0, total]: the kernels then stay in bounds (the call's fault is reported apart).
TEST(Slots, BrokenOffsetsStayInBounds) {
  const std::vector<int32_t> cu = {40, -7, 900, 12, 12, 5000, 3};
  const PackedRows r{cu.data(), (int64_t)cu.size() - 1, 1000};
  for (int b = 0; b <= r.batch; ++b) {
    EXPECT_GE(r.row(b), 0);
    EXPECT_LE(r.row(b), 1000);
  }
  for (int s = 0; s < sinkattn::cuda::slot_count(r.batch, r.total, 64); ++s) {
    const int b = sinkattn::cuda::slot_owner_from(r, r.batch, 64, s, 0);
    EXPECT_GE(b, 0);
    EXPECT_LT(b, r.batch);
  }
}

TEST(Slots, GridOverSlotsOnlyWhereMostOfTheRowsWouldIdle) {
  using sinkattn::cuda::slot_count;
  using sinkattn::cuda::slot_grid_pays;
  // ~4,000 tiny documents beside one of 16k (32k rows), 128-row blocks: 4,001 x 128 blocks
  // against 4,257 slots.
  EXPECT_TRUE(slot_grid_pays(4001, 128, slot_count(4001, 32768, 128)));
  // 8 documents of 256..8k (32k rows): 8 x 64 blocks against 264 slots, most of them used.
  EXPECT_FALSE(slot_grid_pays(8, 64, slot_count(8, 32768, 128)));
  // ~1,000 documents of 16..48 tokens: one block each, every one used.
  EXPECT_FALSE(slot_grid_pays(1000, 1, slot_count(1000, 32768, 128)));
  // Slots x grid blocks per slot past 32 bits: the grid row per sequence instead.
  EXPECT_TRUE(slot_grid_pays(1 << 20, 1 << 10, 1 << 21, 1));
  EXPECT_FALSE(slot_grid_pays(1 << 20, 1 << 10, 1 << 21, 1 << 10));
}

}  // namespace
}  // namespace sinkattn_test
