// Body of sm90::launch_fwd, included by the per-(dtype, head dim) instantiation files.
#pragma once

#include "cuda/sm80/launch.h"
#include "cuda/sm90/fwd_kernel.h"
#include "cuda/sm90/launch.h"
#include "cuda/sm90/tensor_map.h"

namespace sinkattn::cuda::sm90 {

template <typename T, int D>
void launch_fwd(const sm80::Params& p, cudaStream_t stream) {
  constexpr FwdTile t = fwd_tile(D);
  constexpr int smem = FwdSmem<D>::bytes;
  const TensorShape q = q_shape(p, D), kv = kv_shape(p, D);
  const CUtensorMap map_q = make_tile_map(p.q, q, t.block_m);
  const CUtensorMap map_k = make_tile_map(p.k, kv, t.block_n);
  const CUtensorMap map_v = make_tile_map(p.v, kv, t.block_n);
  auto kernel = fwd_kernel<T, D>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const dim3 grid((unsigned)((p.seqlen_q + t.block_m - 1) / t.block_m), (unsigned)p.heads_q,
                  (unsigned)p.batch);
  kernel<<<grid, (t.consumers + 1) * 128, smem, stream>>>(p, map_q, map_k, map_v, pingpong());
  sm80::check_launch("sinkattn sm90 forward kernel");
}

}  // namespace sinkattn::cuda::sm90
