// cuda::StepWalk, the order of a backward key block's (query head, query block) steps (the
// header is host and device, so this is the code the kernels compile): every step exactly once in
// both orders, and the diagonal order's producing steps ahead of the consuming ones.
#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

#include "cuda/common/step_walk.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::StepWalk;

std::vector<std::pair<int, int>> walk(bool diagonal, int group, int blocks) {
  std::vector<std::pair<int, int>> steps;
  StepWalk w = StepWalk::first(diagonal, blocks);
  for (int it = 0; it < group * blocks; ++it, w.advance(diagonal, blocks, group))
    steps.emplace_back(w.head, w.block);
  return steps;
}

TEST(StepWalk, TakesEveryStepOnce) {
  for (bool diagonal : {false, true})
    for (int group = 1; group <= 9; ++group)
      for (int blocks = 1; blocks <= 7; ++blocks) {
        const auto steps = walk(diagonal, group, blocks);
        const std::set<std::pair<int, int>> seen(steps.begin(), steps.end());
        ASSERT_EQ(seen.size(), steps.size())
            << "diagonal " << diagonal << " group " << group << " blocks " << blocks;
        for (const auto& [head, block] : steps) {
          ASSERT_TRUE(head >= 0 && head < group && block >= 0 && block < blocks)
              << "diagonal " << diagonal << " group " << group << " blocks " << blocks;
        }
      }
}

TEST(StepWalk, HeadByHeadOrDiagonals) {
  const std::vector<std::pair<int, int>> by_head = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}};
  EXPECT_EQ(walk(false, 3, 2), by_head);
  // P_h = (h, 1), C_h = (h, 0): P0 P1 C0 P2 C1 .. P7 C6 C7
  std::vector<std::pair<int, int>> diag = {{0, 1}};
  for (int h = 1; h < 8; ++h) diag.insert(diag.end(), {{h, 1}, {h - 1, 0}});
  diag.push_back({7, 0});
  EXPECT_EQ(walk(true, 8, 2), diag);
  // Every step (h, j) of a diagonal walk comes after (h, j + 1): a query block's producing step
  // for the next key block before this key block's consuming one of the same head.
  for (int group = 1; group <= 9; ++group)
    for (int blocks = 2; blocks <= 7; ++blocks) {
      const auto steps = walk(true, group, blocks);
      std::set<std::pair<int, int>> done;
      for (const auto& s : steps) {
        if (s.second + 1 < blocks) {
          EXPECT_TRUE(done.count({s.first, s.second + 1}))
              << "group " << group << " blocks " << blocks;
        }
        done.insert(s);
      }
    }
}

}  // namespace
}  // namespace sinkattn_test
