// Host side of the two GQA-packed band kernels (fwd_band_kernel.h, bwd_band_dq_kernel.h): both
// persistent (band_grid), q (and dO) in boxes of 16 positions x the tile's heads, k / v in boxes
// of the run's key span.
#pragma once

#include <algorithm>

#include "cuda/sm80/launch.h"
#include "cuda/sm90/band_run.h"
#include "cuda/sm90/launch.h"
#include "cuda/sm90/tensor_map.h"

namespace sinkattn::cuda::sm90 {

// Grid of the band kernels: a block per SM (SINKATTN_SM90_PERSISTENT as for the forward), at
// most one per work item (BandItems).
inline unsigned band_grid(const sm80::Params& p, int sms) {
  const long long items = band_items(p);
  const long long want = persistent_blocks();
  const long long blocks = want == 0 ? sms : want > 0 ? want : items;
  return (unsigned)std::max(1LL, std::min(items, blocks));
}

// Launches `kernel(p, map_q, map_k, map_v, extra...)` with Smem's shared memory and tile t's
// threads; `extra` are the maps only the backward takes (dO).
template <typename Smem, typename Kernel, typename... Extra>
void launch_band(const sm80::Params& p, cudaStream_t stream, BandTile t, Kernel kernel,
                 const char* what, Extra... extra) {
  const TensorShape q = q_shape(p, 64), kv = kv_shape(p, 64);
  const CUtensorMap map_q = make_tile_map(p.q, q, 16, t.heads);
  const CUtensorMap map_k = make_tile_map(p.k, kv, Smem::kKeys);
  const CUtensorMap map_v = make_tile_map(p.v, kv, Smem::kKeys);
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::bytes);
  const dim3 grid(band_grid(p, sm80::sm_count()));  // persistent, each block walking runs
  kernel<<<grid, (t.consumers + 1) * 128, Smem::bytes, stream>>>(p, map_q, map_k, map_v, extra...);
  sm80::check_launch(what);
}

}  // namespace sinkattn::cuda::sm90
