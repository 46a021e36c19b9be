// Body of launch_bwd, included by the per-(dtype, head dim) instantiation files.
#pragma once

#include <algorithm>

#include "cuda/sm80/grid.h"
#include "cuda/sm80/bwd_dkdv_kernel.h"
#include "cuda/sm80/bwd_dq_kernel.h"
#include "cuda/sm80/bwd_prep.h"
#include "cuda/sm80/launch.h"

namespace sinkattn::cuda::sm80 {

// The steps around the dk/dv kernel, shared with the Hopper backward: prep (delta, dsink
// partials, zeroed dq accumulator) before it, the dq conversion and dsink after it.
template <typename T, int D>
void launch_bwd_prep(const Params& p, cudaStream_t stream) {
  constexpr int heads = prep_heads(D);
  const bool slots = query_slot_grid(p, kPrepRows);  // packed, most of a grid row per sequence idle
  const dim3 grid(slots ? (unsigned)query_slots(p, kPrepRows) : (unsigned)p.dsink_blocks,
                  (unsigned)((p.heads_q + heads - 1) / heads), slots ? 1u : (unsigned)p.batch);
  bwd_prep_kernel<T, D><<<grid, kPrepWarps * 32, 0, stream>>>(p);
  check_launch("sinkattn backward prep kernel");
}

template <typename T, int D>
void launch_bwd_dq_convert(const Params& p, cudaStream_t stream) {
  const bool packed = p.cu_seqlens_q != nullptr;  // packed: 64 rows of all sequences per block
  const int64_t packed_blocks = std::max<int64_t>((p.total_q + kPrepRows - 1) / kPrepRows, 1);
  const dim3 grid(packed ? (unsigned)packed_blocks : (unsigned)p.dsink_blocks, (unsigned)p.heads_q,
                  packed ? 1u : (unsigned)p.batch);
  bwd_dq_convert_kernel<T, D><<<grid, kPrepWarps * 32, 0, stream>>>(p);
  check_launch("sinkattn backward dq conversion kernel");
}

// The deterministic mode's dq: recomputes S and dP per query block (no atomics).
template <typename T, int D>
void launch_bwd_dq_kernel(const Params& p, cudaStream_t stream) {
  if (p.seqlen_q == 0) return;
  launch_tiled<Kernel::kBwdDq, D, false>(bwd_dq_kernel<T, D>, p, p.heads_q, stream,
                                         "sinkattn backward dq kernel");
}

template <typename T>
void launch_bwd_dsink(const Params& p, cudaStream_t stream) {
  if (p.dsink == nullptr) return;
  bwd_dsink_kernel<T><<<(unsigned)p.heads_q, 32, 0, stream>>>(p);
  check_launch("sinkattn backward dsink kernel");
}

// The dk/dv kernel, in grid.h kv_group's order: about a wave of blocks' worth of kv heads at a
// time (the blocks an SM of this device holds: blocks_per_sm).
template <typename T, int D, bool kLarge>
void launch_bwd_dkdv(const Params& p, cudaStream_t stream) {
  constexpr TileSize t = tile_size(Kernel::kBwdDkDv, D, kLarge);
  constexpr int smem = smem_bytes(Kernel::kBwdDkDv, D, kLarge);
  constexpr auto kernel = bwd_dkdv_kernel<T, D, kLarge>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int per_sm = blocks_per_sm<kernel>(t.warps * 32, smem);
  const int64_t blocks = (p.seqlen_k + t.block_n - 1) / t.block_n;
  Params kp = p;
  kp.bwd_kv_group = launch_kv_group(p.heads_kv, blocks, (long long)sm_count() * per_sm);
  // every sequence its grid row, even packed (grid.h make_kv_grid: the slot grid spilled here)
  kernel<<<make_kv_group_grid(p, blocks), t.warps * 32, smem, stream>>>(kp);
  check_launch("sinkattn backward dk/dv kernel");
}

template <typename T, int D>
void launch_bwd(const Params& p, cudaStream_t stream) {
  launch_bwd_prep<T, D>(p, stream);

  if (p.seqlen_k > 0)
    with_tiles<Kernel::kBwdDkDv, D>(
        [&](auto large) { launch_bwd_dkdv<T, D, decltype(large)::value>(p, stream); });
  if (p.dq_atomic)
    launch_bwd_dq_convert<T, D>(p, stream);
  else
    launch_bwd_dq_kernel<T, D>(p, stream);
  launch_bwd_dsink<T>(p, stream);
}

}  // namespace sinkattn::cuda::sm80
