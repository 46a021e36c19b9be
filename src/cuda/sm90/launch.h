// Host-side launchers of the Hopper kernels, one explicit instantiation per (dtype, head dim)
// in fwd_<dtype>_hd<D>.cu / bwd_<dtype>_hd<D>.cu; dispatch.cu is their only caller.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "cuda/sm80/params.h"

namespace sinkattn::cuda::sm90 {

// Consumer ping-pong (turns.h); SINKATTN_SM90_PINGPONG=0 turns it off, for measurements.
inline bool pingpong() {
  static const bool on = [] {
    const char* v = std::getenv("SINKATTN_SM90_PINGPONG");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

// Head dims with Hopper kernels (forward and backward).
constexpr bool has_kernels(int d) { return d == 64 || d == 128; }

template <typename T, int D>
void launch_fwd(const sm80::Params& p, cudaStream_t stream);

// The whole backward: dq by TMA reductions (params.dq_atomic = 1, dq_accum set) or, in the
// deterministic mode, by the portable dq kernel.
template <typename T, int D>
void launch_bwd(const sm80::Params& p, cudaStream_t stream);

}  // namespace sinkattn::cuda::sm90
