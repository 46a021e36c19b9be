// Instantiates the portable bwd path for bf16, head dim 64.
#include "cuda/sm80/launch_bwd.h"

template void sinkattn::cuda::sm80::launch_bwd<__nv_bfloat16, 64>(const Params&, cudaStream_t);
