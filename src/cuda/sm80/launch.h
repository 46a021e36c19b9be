// Host-side launchers of the portable kernels, one explicit instantiation per (dtype, head dim)
// in fwd_<dtype>_hd<D>.cu / bwd_<dtype>_hd<D>.cu; dispatch.cu is their only caller.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <type_traits>

#include "cuda/common/per_device.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

template <typename T, int D>
void launch_fwd(const Params& p, cudaStream_t stream);

// The forward of problems whose query rows of a GQA group fit one 16-row tile (decode):
// fwd_packed_kernel.h; only head dims up to 128. p.packed_splits key splits (> 1: with
// p.packed_partial, and a combine kernel after).
template <typename T, int D>
void launch_fwd_packed(const Params& p, cudaStream_t stream);

// Runs the whole backward: prep (delta, dsink partials, dq accumulator zeroing), dk/dv (with
// atomic dq in the fast mode), then the dq conversion (fast mode) or the dq kernel
// (deterministic mode), then dsink.
template <typename T, int D>
void launch_bwd(const Params& p, cudaStream_t stream);

// Streaming multiprocessors of a CUDA device (-1: the current one), queried once per device.
int sm_count(int device = -1);

// Blocks of Kernel (launched with `threads` and `smem` bytes of dynamic shared memory, the same
// at every launch of one kernel) one SM of the current device holds, at least 1: the occupancy
// API's answer, kept per kernel and device (no lock on the launch path). A failed query answers
// 1, is asked again next time, and leaves no error for check_launch.
template <auto Kernel>
int blocks_per_sm(int threads, int smem) {
  static std::atomic<int> known[64] = {};
  int device = 0;
  cudaGetDevice(&device);
  const int n = per_device(known, device, [&] {
    int blocks = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, threads, smem) != cudaSuccess)
      cudaGetLastError();
    return blocks;
  });
  return n > 0 ? n : 1;
}

// Whether kernel k at head dim d launches its large tile set (tile_size.h) on the current device:
// where it has one and the device holds it at the blocks per SM it was tuned for.
// SINKATTN_SM80_TILES=small forces the small set (what sm_80 / sm_86 / sm_89 run) for tests.
bool large_tiles(Kernel k, int d);

// Whether the packed-group forward at head dim d with `blocks` blocks runs PackedTile::kDeepStages
// k / v stages on the current device (PackedTile::deep; SINKATTN_SM80_TILES=small forces 2).
bool packed_deep(int d, int64_t blocks);

// Throws sinkattn::Error(SINKATTN_ERROR_CUDA) naming `what` if the last launch failed.
void check_launch(const char* what);

// Launches kernel (the forward or the dq kernel, K, at head dim D, with the tile set kLarge)
// over the query row blocks of each of `heads` heads, in grid.h's launch order
// (make_query_grid), with its shared memory opted in.
template <Kernel K, int D, bool kLarge, typename Fn>
void launch_tiled(Fn kernel, const Params& p, int64_t heads, cudaStream_t stream,
                  const char* what) {
  static_assert(K != Kernel::kBwdDkDv, "the dk/dv kernel launches in kv_group's order");
  constexpr TileSize t = tile_size(K, D, kLarge);
  constexpr int smem = smem_bytes(K, D, kLarge);
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  kernel<<<make_query_grid(p, t.block_m, heads), t.warps * 32, smem, stream>>>(p);
  check_launch(what);
}

// The dK/dV kernels' kv heads at a time (grid.h kv_group) for `slots` blocks running at once;
// SINKATTN_BWD_KV_GROUP=n forces n (then made a divisor of heads_kv), so that tests walk small
// grids in groups.
inline int launch_kv_group(long long heads_kv, long long blocks, long long slots) {
  static const long long force = [] {
    const char* v = std::getenv("SINKATTN_BWD_KV_GROUP");
    return v == nullptr ? 0LL : std::atoll(v);
  }();
  return kv_group(heads_kv, blocks, slots, force);
}

// Calls f(std::true_type{}) when kernel K at head dim D launches its large tiles, else
// f(std::false_type{}); the large instantiation exists only where its shape differs.
template <Kernel K, int D, typename F>
void with_tiles(F&& f) {
  if constexpr (has_large_tiles(K, D))
    if (large_tiles(K, D)) return f(std::true_type{});
  f(std::false_type{});
}

}  // namespace sinkattn::cuda::sm80
