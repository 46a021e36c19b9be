// Instantiates the portable bwd path for fp16, head dim 32.
#include "cuda/sm80/launch_bwd.h"

template void sinkattn::cuda::sm80::launch_bwd<__half, 32>(const Params&, cudaStream_t);
