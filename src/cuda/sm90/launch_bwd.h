// Body of sm90::launch_bwd, included by the per-(dtype, head dim) instantiation files: the
// portable prep (or, for narrow bands under GQA, params.band_dq, the band dq kernel, which
// writes delta itself), the Hopper dK/dV kernel (dq by TMA reductions in atomic mode, or handed
// from key block to key block under narrow windows), then the portable dq conversion (atomic
// mode) or the Hopper dq kernel (deterministic mode) unless dq was written already, and dsink.
#pragma once

#include "cuda/sm80/launch_bwd.h"
#include "cuda/sm90/band_launch.h"
#include "cuda/sm90/bwd_band_dq_kernel.h"
#include "cuda/sm90/bwd_dq_kernel.h"
#include "cuda/sm90/bwd_kernel.h"
#include "cuda/sm90/launch.h"
#include "cuda/sm90/tensor_map.h"

namespace sinkattn::cuda::sm90 {

// The deterministic mode's dq (bwd_dq_kernel.h); the portable dq kernel where there are no keys
// (a tensor map needs at least one row).
template <typename T, int D>
void launch_bwd_dq(const sm80::Params& p, cudaStream_t stream) {
  if (p.seqlen_q == 0) return;
  const TensorShape q = q_shape(p, D), kv = kv_shape(p, D);
  if (p.seqlen_k == 0 || kv.rows == 0) return sm80::launch_bwd_dq_kernel<T, D>(p, stream);
  constexpr DqTile t = dq_tile(D);
  constexpr int smem = DqSmem<D>::bytes;
  const CUtensorMap map_q = make_tile_map(p.q, q, t.block_m);
  const CUtensorMap map_dout = make_tile_map(p.dout, q, t.block_m);
  const CUtensorMap map_k = make_tile_map(p.k, kv, t.block_n);
  const CUtensorMap map_v = make_tile_map(p.v, kv, t.block_n);
  auto kernel = bwd_dq_kernel<T, D>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const dim3 grid = sm80::make_query_grid(p, t.block_m, p.heads_q);
  kernel<<<grid, (t.consumers + 1) * 128, smem, stream>>>(p, map_q, map_k, map_v, map_dout);
  sm80::check_launch("sinkattn sm90 dq kernel");
}

template <typename T, int D>
void launch_bwd(const sm80::Params& p, cudaStream_t stream) {
  if (!p.band_dq) {
    sm80::launch_bwd_prep<T, D>(p, stream);
  } else if constexpr (D == 64) {
    // dq, delta and the dsink partials of a narrow band under GQA
    launch_band<BandDqSmem>(
        p, stream, band_tile(),
        band_slots(p) ? bwd_band_dq_kernel<T, true> : bwd_band_dq_kernel<T, false>,
        "sinkattn sm90 band dq kernel",
        make_tile_map(p.dout, q_shape(p, 64), 16, band_tile().heads));
  }
  if (p.seqlen_k > 0 && p.seqlen_q > 0) {
    constexpr BwdTile t = bwd_tile(D);
    const bool varlen = p.cu_seqlens_q != nullptr;
    const int64_t q_rows = varlen ? p.total_q : p.batch * p.seqlen_q;
    const TensorShape q = q_shape(p, D), kv = kv_shape(p, D);
    const CUtensorMap map_q = make_tile_map(p.q, q, t.block_m);
    const CUtensorMap map_dout = make_tile_map(p.dout, q, t.block_m);
    const CUtensorMap map_k = make_tile_map(p.k, kv, t.block_n);
    const CUtensorMap map_v = make_tile_map(p.v, kv, t.block_n);
    // dq_accum in boxes of 32 columns x 64 rows, a consumer's part of a step: the writer warp's
    // reductions or the handoff's partial loads (unused in the deterministic mode without the
    // handoff).
    const bool handoff = p.dq_flags != nullptr;
    const CUtensorMap map_dq = handoff || p.dq_atomic
                                   ? make_accum_map(p.dq_accum, q_rows, p.heads_q, D, 64)
                                   : CUtensorMap{};
    // Narrow windows (every step cut by the band) take their own instantiation of the mask code,
    // and with the band dq kernel one without dQ.
    auto kernel = fwd_short_rows(p.window_left, p.window_right) ? bwd_kernel<T, D, true>
                                                                 : bwd_kernel<T, D, false>;
    int smem = BwdSmem<D>::bytes;
    if constexpr (D == 64) {
      if (p.band_dq) {
        kernel = bwd_kernel<T, D, true, true>;
        smem = BwdSmem<D, true>::bytes;
      }
    }
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    const int64_t blocks = (p.seqlen_k + t.block_n - 1) / t.block_n;  // of the longest sequence
    sm80::Params kp = p;
    kp.bwd_kv_group = sm80::launch_kv_group(p.heads_kv, blocks, sm80::sm_count());  // 1 per SM
    kernel<<<sm80::make_kv_grid(p, t.block_n), (t.consumers + 1) * 128, smem, stream>>>(
        kp, map_q, map_k, map_v, map_dout, map_dq);
    sm80::check_launch("sinkattn sm90 backward kernel");
  }
  if (p.dq_flags != nullptr || p.band_dq) {
    // written: handed on (rows that see no key: by the prep) or by the band dq kernel
  } else if (p.dq_atomic) {
    sm80::launch_bwd_dq_convert<T, D>(p, stream);
  } else {
    launch_bwd_dq<T, D>(p, stream);
  }
  sm80::launch_bwd_dsink<T>(p, stream);
}

}  // namespace sinkattn::cuda::sm90
