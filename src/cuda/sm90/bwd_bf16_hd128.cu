// Hopper backward, bf16, head dim 128.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/sm90/launch_bwd.h"

namespace sinkattn::cuda::sm90 {
template void launch_bwd<__nv_bfloat16, 128>(const sm80::Params&, cudaStream_t);
}  // namespace sinkattn::cuda::sm90
