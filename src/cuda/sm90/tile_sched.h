// Which tiles a block of the Hopper forward computes. Tiles are numbered in the launch order of
// sm80/grid.h (heads fastest, then row blocks, heaviest first, then sequences). With a block per
// tile the hardware scheduler hands them out; a persistent grid (a block per SM) takes them in
// the same order from a counter, so a block that drew light tiles takes more of them.
#pragma once

#include <cstdint>

#include "cuda/sm80/grid.h"

namespace sinkattn::cuda::sm90 {

struct TileSched {
  int64_t blocks;  // row blocks per sequence (of the longest, for varlen)
  int64_t heads;   // query heads
  int64_t batch;   // sequences

  __host__ __device__ int64_t total() const { return blocks * heads * batch; }

  // Persistent blocks: the tile after this block's current one. Block b starts with tile b and
  // then takes the next unclaimed one, so a block that drew light tiles takes more of them (the
  // hardware's order for a block per tile, without each block's start).
  __device__ __forceinline__ int64_t next(uint32_t* counter) const {
    return gridDim.x + (int64_t)atomicAdd(counter, 1u);
  }

  // Persistent blocks, having drawn tile t, which has no rows (a packed sequence shorter than
  // the longest: its row blocks past its end come first, FwdWork's order): moves the counter to
  // the sequence's first tile with rows (or to the next sequence when it has none), so that its
  // other rowless tiles cost one atomic, not one each (4,000 tiny documents beside one of 16k
  // drew 33M of them: 105 ms). All tiles skipped lie in that run of rowless tiles.
  __device__ __noinline__ void skip_rowless(uint32_t* counter, int64_t t, int64_t len_q,
                                               int bm) const {
    const int64_t b = t / (heads * blocks);
    const int64_t first = (b * blocks + blocks - (len_q + bm - 1) / bm) * heads;
    if (first > t + 1 && first > gridDim.x) atomicMax(counter, (uint32_t)(first - gridDim.x));
  }

  __device__ __forceinline__ sm80::GridPos pos(int64_t t) const {
    const int64_t rest = t / heads;
    return {rest % blocks, t % heads, rest / blocks};
  }
};

}  // namespace sinkattn::cuda::sm90
