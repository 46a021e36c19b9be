// Body of launch_fwd, included by the per-(dtype, head dim) instantiation files.
#pragma once

#include "cuda/sm80/grid.h"
#include "cuda/sm80/fwd_kernel.h"
#include "cuda/sm80/fwd_packed_kernel.h"
#include "cuda/sm80/launch.h"

namespace sinkattn::cuda::sm80 {

template <typename T, int D>
void launch_fwd(const Params& p, cudaStream_t stream) {
  with_tiles<Kernel::kFwd, D>([&](auto large) {
    constexpr bool kLarge = decltype(large)::value;
    launch_tiled<Kernel::kFwd, D, kLarge>(fwd_kernel<T, D, kLarge>, p, p.heads_q, stream,
                                          "sinkattn forward kernel");
  });
}

template <typename T, int D>
void launch_fwd_packed(const Params& p, cudaStream_t stream) {
  if constexpr (D <= PackedTile::kMaxDim) {
    const dim3 grid((unsigned)p.heads_kv, (unsigned)p.batch, (unsigned)p.packed_splits);
    auto launch = [&](auto stages_c) {
      constexpr int kStages = decltype(stages_c)::value, smem = PackedTile::bytes(D, kStages);
      auto kernel = fwd_packed_kernel<T, D, kStages>;
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      kernel<<<grid, PackedTile::kWarps * 32, smem, stream>>>(p);
    };
    if (packed_deep(D, (int64_t)grid.x * grid.y * grid.z))
      launch(std::integral_constant<int, PackedTile::kDeepStages>{});
    else
      launch(std::integral_constant<int, 2>{});
    check_launch("sinkattn packed-group forward kernel");
    if (p.packed_splits > 1) {
      fwd_packed_combine_kernel<T, D><<<dim3(grid.x, grid.y), 128, 0, stream>>>(p);
      check_launch("sinkattn packed-group combine kernel");
    }
  }
}

}  // namespace sinkattn::cuda::sm80
