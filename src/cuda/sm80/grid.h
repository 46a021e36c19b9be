// Launch order of the attention kernels' blocks (one per row block, head and sequence), shared by
// the portable and the Hopper kernels: grid = (heads, row blocks, sequences), so within a
// sequence the heads vary fastest and every head's heaviest row blocks launch before anyone's
// light ones. Before (row blocks fastest), the last head's heaviest blocks started when the
// other heads were nearly done: H200, Hopper kernels, gptoss 4k backward 222 -> 365 TFLOP/s,
// llama 8k 369 -> 478. Sequences stay slowest so that the blocks running together share one
// sequence's rows in L2 (the dq accumulator above all: with sequences in x as well, 8 packed
// documents measured 9.6 -> 12.1 ms backward). Grids with over 65535 row blocks keep the row
// blocks in grid.x. (The dK/dV kernels take their kv heads a few at a time instead, all of one
// group's blocks before the next group's: kv_group below.)
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

// The dK/dV kernels' launch order (both paths): the key blocks of kv_group kv heads at a time,
// about one wave of blocks (kv_group x blocks nearest `slots`, the blocks the GPU runs at once),
// a divisor of heads_kv; force > 0 asks for another group. Blocks of one kv head read the same
// q / dO tiles and reduce into the same dq rows, and with every kv head at once (the order
// before) the blocks in flight held 8 kv heads' tiles: a trace of the walk through an LRU model
// of L2 (tests/cuda/bwd_l2_model.py: 50 MB, uniform steps) put the Hopper kernel's DRAM misses
// at 1.7 GB for llama 8k and 8.0 GB for gptoss 16k (hit rates 0.80 and 0.76, as Nsight
// measured), against 0.26 and 0.51 GB with 2 and 1 kv heads at a time, for walks 0.8% longer in
// the model (one kv head at a time at 4k: 1.6x longer, the blocks of the last head starting
// late). H200, 7 interleaved rounds: Hopper kernel gptoss 16k +4.3%, llama 8k +3.5%, 32k +0.9%,
// varlen +0.5%, 4k -0.6% (at the 700 W limit, the clock rose 1680 -> 1740 MHz at 16k and 1590
// -> 1680 at llama 8k: most of the gain is DRAM energy); portable kernel 16k +2.0%, llama 8k
// +2.3%, 4k +2.4%, varlen -1.2 / -0.2% (two calls).
constexpr int kv_group(long long heads_kv, long long blocks, long long slots,
                       long long force = 0) {
  long long g = force > 0 ? force : (slots + blocks / 2) / (blocks > 0 ? blocks : 1);
  g = g < 1 ? 1 : g > heads_kv ? heads_kv : g;
  while (g > 1 && heads_kv % g != 0) --g;
  return (int)g;
}
static_assert(kv_group(8, 64, 132) == 2 && kv_group(8, 128, 132) == 1 &&
                  kv_group(8, 32, 132) == 4 && kv_group(8, 1, 132) == 8 &&
                  kv_group(8, 256, 132) == 1 && kv_group(6, 33, 132) == 3 &&
                  kv_group(3, 64, 132) == 1 && kv_group(8, 4, 132, 3) == 2,
              "backward launch order: llama 8k 2 kv heads at a time, gptoss 16k 1, 4k 4");

// The grid of kv_group's order: heads_kv x key blocks in x, sequences in z. Over 2^31 - 1 blocks
// in x would take over 2^36 key rows of all kv heads (blocks hold >= 32 keys), and dK alone
// (outputs may not overlap themselves) 4 TB: no backward gets there.
inline dim3 make_kv_group_grid(const Params& p, int64_t blocks) {
  return dim3((unsigned)(blocks * p.heads_kv), 1, (unsigned)p.batch);
}

// The block's (key block, kv head, sequence) in kv_group's order: each sequence's key blocks
// heaviest first, p.bwd_kv_group kv heads at a time, heads fastest within the group (32-bit
// math: a 64-bit division is ~50 instructions).
__device__ __forceinline__ GridPos kv_group_grid_pos(int64_t blocks, int kv_group) {
  const uint32_t i = blockIdx.x, per_chunk = (uint32_t)blocks * kv_group, chunk = i / per_chunk;
  const uint32_t r = i - chunk * per_chunk, g = (uint32_t)kv_group;
  return {r / g, chunk * g + r % g, blockIdx.z};
}

}  // namespace sinkattn::cuda::sm80
