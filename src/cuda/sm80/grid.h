// Launch order of the attention kernels' blocks (one per row block, head and sequence), shared by
// the portable and the Hopper kernels: grid = (heads, row blocks, sequences), so within a
// sequence the heads vary fastest and every head's heaviest row blocks launch before anyone's
// light ones. Before (row blocks fastest), the last head's heaviest blocks started when the
// other heads were nearly done: H200, Hopper kernels, gptoss 4k backward 222 -> 365 TFLOP/s,
// llama 8k 369 -> 478. Sequences stay slowest so that the blocks running together share one
// sequence's rows in L2 (the dq accumulator above all: with sequences in x as well, 8 packed
// documents measured 9.6 -> 12.1 ms backward). Grids with over 65535 row blocks keep the row
// blocks in grid.x. (The Hopper dK/dV kernel takes its kv heads a few at a time instead, all
// of one group's blocks before the next group's: sm90/bwd_kernel.h bwd_grid_pos.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm80/params.h"

namespace sinkattn::cuda::sm80 {

struct GridPos {
  int64_t block;  // row block, in launch order
  int64_t head;   // query head (forward, dq) or kv head (dk/dv)
  int64_t b;      // batch entry or sequence
};

constexpr int64_t kGridYMax = 65535;

inline dim3 make_grid(const Params& p, int64_t blocks, int64_t heads) {
  if (blocks <= kGridYMax) return dim3((unsigned)heads, (unsigned)blocks, (unsigned)p.batch);
  return dim3((unsigned)blocks, (unsigned)heads, (unsigned)p.batch);
}

// This block's position; `blocks` as given to make_grid.
__device__ __forceinline__ GridPos grid_pos(int64_t blocks) {
  if (blocks <= kGridYMax) return {blockIdx.y, blockIdx.x, blockIdx.z};
  return {blockIdx.x, blockIdx.y, blockIdx.z};
}

}  // namespace sinkattn::cuda::sm80
