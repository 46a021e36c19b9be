// How a packed call numbers its sequences' row blocks in one row of slots: the grids over slots
// (sm80/grid.h), the band kernels' items (sm90/band_run.h) and the arrays kept per 64-row group
// (sm80/sequence.h group0). Sequence b's blocks of `rows` rows start at slot
// start(b) = b + row(b) / rows, row(b) its first packed row; its run reaches the next
// sequence's start, so it holds its blocks and at most one idle slot, and all runs lie below
// batch + total / rows. Host and device: the CPU tests check the numbering
// (tests/cpp/test_slots.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/common/host_device.h"

namespace sinkattn::cuda {

// One side's prefix sums (q or k), each entry read clamped to [0, total] as Sequence clamps it
// (32 bits: offsets are int32 and totals at most INT32_MAX).
struct PackedRows {
  const int32_t* cu;
  int64_t batch;
  int total;
  SINKATTN_HOST_DEVICE int row(int b) const {
#if defined(__CUDA_ARCH__)
    return min(max(cu[b], 0), total);
#else
    return std::min(std::max(cu[b], 0), total);
#endif
  }
  // The first slot of sequence b's run.
  SINKATTN_HOST_DEVICE int start(int b, int rows) const { return b + row(b) / rows; }
};

// Slots in all: every run lies below.
SINKATTN_HOST_DEVICE int64_t slot_count(int64_t batch, int64_t total, int rows) {
  return batch + total / rows;
}

// Whether a packed call's kernel of `blocks` row blocks per sequence runs over `slots` slots
// rather than a grid row per sequence: only where over half of that grid would idle (finding a
// slot's sequence costs a block ~1 us; see sm80/grid.h). `cells`: grid blocks per slot; the
// slots' arithmetic is 32-bit, as a grid's x.
SINKATTN_HOST_DEVICE bool slot_grid_pays(int64_t batch, int64_t blocks, int64_t slots,
                                         int64_t cells = 1) {
  return batch * blocks > 2 * slots && slots * cells <= INT32_MAX;
}

// The row block a slot stands for, `local` slots into the run of a sequence of `needed` row
// blocks, counted as a grid row per sequence counts them among the longest's `blocks`, heaviest
// (last) first: a run starts with its sequence's last row block. -1 for an idle slot.
SINKATTN_HOST_DEVICE int64_t slot_row_block(int64_t blocks, int local, int needed) {
  return local >= 0 && local < needed ? blocks - needed + local : -1;
}

// The sequence whose run holds slot s (the last b with start(b) <= s), found by scanning on from
// `from`, the answer for a slot at most s: a walk over increasing slots (the band kernels' items)
// costs at most batch + slots loads in all. For unsound offsets some b in [from, batch).
SINKATTN_HOST_DEVICE int slot_owner_from(const PackedRows& r, int64_t batch, int rows, int s,
                                         int from) {
  while (from + 1 < batch && r.start(from + 1, rows) <= s) ++from;
  return from;
}

}  // namespace sinkattn::cuda
