// Host-side launchers of the Hopper kernels, one explicit instantiation per (dtype, head dim)
// in fwd_<dtype>_hd<D>.cu / bwd_<dtype>_hd<D>.cu; dispatch.cu is their only caller.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/sm80/params.h"
#include "cuda/sm90/tile_size.h"

namespace sinkattn::cuda::sm90 {

// Whether the environment leaves switch `name` on: unset, or anything but "0" (the SINKATTN_SM90_*
// switches below turn kernels off for measurements).
inline bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Consumer ping-pong (turns.h); SINKATTN_SM90_PINGPONG=0 turns it off, for measurements.
inline bool pingpong() {
  static const bool on = env_on("SINKATTN_SM90_PINGPONG");
  return on;
}

// Blocks of a persistent forward grid (tile_sched.h): 0 = a block per SM. SINKATTN_SM90_PERSISTENT
// = 0 gives it a block per tile instead (-1, for measurements); = n > 1 caps the grid at n blocks,
// so that tests make every block walk many tiles.
inline long long persistent_blocks() {
  static const long long n = [] {
    const char* v = std::getenv("SINKATTN_SM90_PERSISTENT");
    if (v == nullptr || *v == '\0' || std::strcmp(v, "1") == 0) return 0LL;
    const long long x = std::atoll(v);
    return x > 1 ? x : -1LL;  // -1: off
  }();
  return n;
}

// Whether a forward takes the GQA-packed band kernel (fwd_band_kernel.h; tile_size.h's
// fwd_band). SINKATTN_SM90_BAND=0 turns it off, for measurements.
inline bool use_band(int d, long long group, long long left, long long right, int zigzag_world,
                     long long seqlen_q) {
  static const bool on = env_on("SINKATTN_SM90_BAND");
  return on && fwd_band(d, group, left, right, zigzag_world) && seqlen_q > 0;
}

// Whether the backward's dq comes from the band dq kernel (bwd_band_dq_kernel.h): where the band
// forward applies. SINKATTN_SM90_BAND_DQ=0 turns it off (the dq handoff then), for measurements.
inline bool use_band_dq(int d, long long group, long long left, long long right, int zigzag_world,
                        long long seqlen_q) {
  static const bool on = env_on("SINKATTN_SM90_BAND_DQ");
  return on && fwd_band(d, group, left, right, zigzag_world) && seqlen_q > 0;
}

// Head dims with Hopper kernels (forward and backward).
constexpr bool has_kernels(int d) { return d == 64 || d == 128; }

template <typename T, int D>
void launch_fwd(const sm80::Params& p, cudaStream_t stream);

// The whole backward: dq by TMA reductions (params.dq_atomic = 1, dq_accum set), handed from key
// block to key block (dq_flags set), by the band dq kernel (band_dq = 1) or, in the
// deterministic mode otherwise, by the Hopper dq kernel (bwd_dq_kernel.h).
template <typename T, int D>
void launch_bwd(const sm80::Params& p, cudaStream_t stream);

}  // namespace sinkattn::cuda::sm90
