// The order in which a backward key block takes its steps, each a (query head of the GQA group,
// query block) pair, walked with counters (no division per step). Head by head, each over the
// query blocks the key block walks; or, for the narrow-window backward's dq handoff
// (sm90/dq_handoff.h), by diagonals head + kLead * (blocks - 1 - block), the higher query
// blocks of a diagonal first. There the steps whose partial the next key block waits for (its
// higher query blocks: P) run ahead of those that wait (C): for two query blocks over 8 heads,
// P0 P1 C0 P2 C1 .. P7 C6 C7. Head by head, block j's first step would wait for block j - 1's
// second, that for j - 2's, and so on across the wave. Host and device (tested in
// tests/cpp/test_step_walk.cpp).
#pragma once

#include "cuda/common/host_device.h"

namespace sinkattn::cuda {

struct StepWalk {
  // How many heads ahead a diagonal's higher blocks run (2: P0 P1 P2 C0 P3 C1 .., measured 6%
  // slower on the window backward: docs/PERFORMANCE.md).
  static constexpr int kLead = 1;
  int head, block;  // within the group, within the query blocks the key block walks

  SINKATTN_HOST_DEVICE static StepWalk first(bool diagonal, int blocks) {
    return {0, diagonal ? blocks - 1 : 0};
  }

  // The next step (past the last one: anything).
  SINKATTN_HOST_DEVICE void advance(bool diagonal, int blocks, int group) {
    if (!diagonal) {
      if (++block == blocks) block = 0, ++head;
      return;
    }
    if (block > 0 && head >= kLead) {  // down the diagonal
      --block, head -= kLead;
      return;
    }
    // the next diagonal that holds a step, from its highest block
    const int last = group - 1 + kLead * (blocks - 1);
    for (int d = head + kLead * (blocks - 1 - block) + 1; d <= last; ++d) {
      block = blocks - 1, head = d;
      while (head >= group && block > 0) --block, head -= kLead;
      if (head >= 0 && head < group) return;
    }
  }
};

}  // namespace sinkattn::cuda
