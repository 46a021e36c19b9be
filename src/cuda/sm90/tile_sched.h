// Which tiles a block of the Hopper forward computes. Tiles are numbered in the launch order of
// sm80/grid.h (heads fastest, then row blocks, then sequences). With a block per tile the
// hardware scheduler hands them out; a persistent grid (a block per SM) walks them in rounds of
// gridDim.x, serpentine (odd rounds backwards), so that a block taking the heaviest tile of one
// round takes the lightest of the next and the causal blocks, numbered heaviest first, even out.
#pragma once

#include <cstdint>

#include "cuda/sm80/grid.h"

namespace sinkattn::cuda::sm90 {

struct TileSched {
  int64_t blocks;  // row blocks per sequence (of the longest, for varlen)
  int64_t heads;   // query heads
  int64_t batch;   // sequences

  __host__ __device__ int64_t total() const { return blocks * heads * batch; }

  // This block's tile in round r; >= total() when it has none left (nor in later rounds).
  __device__ __forceinline__ int64_t tile(int r) const {
    const int64_t g = gridDim.x;
    return r * g + ((r & 1) ? g - 1 - blockIdx.x : blockIdx.x);
  }

  __device__ __forceinline__ sm80::GridPos pos(int64_t t) const {
    const int64_t rest = t / heads;
    return {rest % blocks, t % heads, rest / blocks};
  }
};

}  // namespace sinkattn::cuda::sm90
