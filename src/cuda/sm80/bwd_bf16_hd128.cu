// Instantiates the portable bwd path for bf16, head dim 128.
#include "cuda/sm80/launch_bwd.h"

template void sinkattn::cuda::sm80::launch_bwd<__nv_bfloat16, 128>(const Params&, cudaStream_t);
