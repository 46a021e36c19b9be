// Instantiates the portable bwd path for bf16, head dim 32.
#include "cuda/sm80/launch_bwd.h"

template void sinkattn::cuda::sm80::launch_bwd<__nv_bfloat16, 32>(const Params&, cudaStream_t);
