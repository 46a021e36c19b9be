// Launch order of the attention kernels' blocks (one per row block, head and sequence), shared by
// the portable and the Hopper kernels.
// Fixed-length batches put heads x batch entries in grid.x, so they vary fastest and every
// head's heaviest row blocks launch before anyone's light ones (H200, Hopper kernels: gptoss 4k
// backward 246 -> 369 TFLOP/s, llama 8k 383 -> 452; before, the last head's heaviest blocks
// started when the other heads were nearly done). Packed varlen batches, and grids too large for
// that layout, keep the row blocks in grid.x: with varlen the heads-first order measured slower
// (gptoss, 8 documents of 256..8k: backward 9.6 -> 12.1 ms).
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

// Whether a problem with `blocks` row blocks per sequence and `heads` heads runs heads-first.
__host__ __device__ __forceinline__ bool heads_first(const Params& p, int64_t blocks, int64_t heads) {
  return p.cu_seqlens_q == nullptr && blocks <= 65535 && heads * p.batch <= INT32_MAX;
}

inline dim3 make_grid(const Params& p, int64_t blocks, int64_t heads) {
  if (heads_first(p, blocks, heads)) return dim3((unsigned)(heads * p.batch), (unsigned)blocks);
  return dim3((unsigned)blocks, (unsigned)heads, (unsigned)p.batch);
}

// This block's position; `blocks` and `heads` as given to make_grid.
__device__ __forceinline__ GridPos grid_pos(const Params& p, int64_t blocks, int64_t heads) {
  if (heads_first(p, blocks, heads)) {
    const unsigned h = (unsigned)heads;  // heads x batch < 2^31: 32-bit division
    return {blockIdx.y, blockIdx.x % h, blockIdx.x / h};
  }
  return {blockIdx.x, blockIdx.y, blockIdx.z};
}

}  // namespace sinkattn::cuda::sm80
