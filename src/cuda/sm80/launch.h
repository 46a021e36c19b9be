// Host-side launchers of the portable kernels, one explicit instantiation per (dtype, head dim)
// in fwd_<dtype>_hd<D>.cu / bwd_<dtype>_hd<D>.cu; dispatch.cu is their only caller.
#pragma once

#include <cuda_runtime.h>

#include "cuda/sm80/params.h"

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

// Throws sinkattn::Error(SINKATTN_ERROR_CUDA) naming `what` if the last launch failed.
void check_launch(const char* what);

}  // namespace sinkattn::cuda::sm80
