// Body of sm90::launch_fwd, included by the per-(dtype, head dim) instantiation files.
#pragma once

#include <algorithm>
#include <cstdlib>

#include "backend.h"
#include "cuda/sm80/launch.h"
#include "cuda/sm90/band_launch.h"
#include "cuda/sm90/fwd_band_kernel.h"
#include "cuda/sm90/fwd_kernel.h"
#include "cuda/sm90/launch.h"
#include "cuda/sm90/tensor_map.h"

namespace sinkattn::cuda::sm90 {

template <typename T, int D, bool kShort>
void run_fwd(const sm80::Params& p, cudaStream_t stream) {
  constexpr FwdTile t = fwd_tile(D, kShort);
  constexpr int smem = FwdSmem<D, kShort>::bytes;
  const TensorShape q = q_shape(p, D), kv = kv_shape(p, D);
  const CUtensorMap map_q = make_tile_map(p.q, q, t.block_m);
  const CUtensorMap map_k = make_tile_map(p.k, kv, t.block_n);
  const CUtensorMap map_v = make_tile_map(p.v, kv, t.block_n);
  constexpr auto kernel = fwd_kernel<T, D, kShort>;
  constexpr int threads = (t.consumers + 1) * 128;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int per_sm = sm80::blocks_per_sm<kernel>(threads, smem);
  // Persistent kernels: a block per SM (or SINKATTN_SM90_PERSISTENT blocks, or a block per tile
  // when it is 0); the others: sm80/grid.h make_query_grid's, a block per tile.
  const TileSched sched{(p.seqlen_q + t.block_m - 1) / t.block_m, p.heads_q, p.batch};
  const long long want = persistent_blocks();
  const int64_t blocks = want == 0 ? (int64_t)sm80::sm_count() * per_sm : want > 0 ? want : 0x7fffffff;
  const dim3 grid = t.persistent ? dim3((unsigned)std::min(sched.total(), blocks))
                                 : sm80::make_query_grid(p, t.block_m, p.heads_q);
  if constexpr (t.persistent) {  // the tile counter (tile_sched.h) starts at 0 every launch
    if (p.tile_counter == nullptr)
      throw Error(SINKATTN_ERROR_INTERNAL, "sinkattn sm90 forward: no tile counter in the workspace");
    cudaMemsetAsync(p.tile_counter, 0, sizeof(uint32_t), stream);  // its error: check_launch's
  }
  kernel<<<grid, threads, smem, stream>>>(p, map_q, map_k, map_v, pingpong());
  sm80::check_launch("sinkattn sm90 forward kernel");
}

template <typename T, int D>
void launch_fwd(const sm80::Params& p, cudaStream_t stream) {
  if constexpr (D == 64) {
    if (use_band(D, p.group, p.window_left, p.window_right, p.zigzag_world, p.seqlen_q))
      return launch_band<BandSmem>(
          p, stream, band_fwd_tile(),
          band_slots(p) ? fwd_band_kernel<T, true> : fwd_band_kernel<T, false>,
          "sinkattn sm90 band forward kernel");
  }
  constexpr FwdTile a = fwd_tile(D, false), b = fwd_tile(D, true);
  if constexpr (a.block_m != b.block_m) {  // two shapes for this head dim: pick per problem
    // SINKATTN_SM90_SHORT_ROWS=0 / 1 forces the choice (for measurements).
    static const char* force = std::getenv("SINKATTN_SM90_SHORT_ROWS");
    const bool short_rows =
        force != nullptr && *force != '\0'
            ? *force == '1'
            : fwd_short_tiles(p.seqlen_q, p.seqlen_k, p.window_left, p.window_right);
    if (short_rows) return run_fwd<T, D, true>(p, stream);
  }
  run_fwd<T, D, false>(p, stream);
}

}  // namespace sinkattn::cuda::sm90
