// Hopper forward, fp16, head dim 64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/sm90/launch_fwd.h"

namespace sinkattn::cuda::sm90 {
template void launch_fwd<__half, 64>(const sm80::Params&, cudaStream_t);
}  // namespace sinkattn::cuda::sm90
