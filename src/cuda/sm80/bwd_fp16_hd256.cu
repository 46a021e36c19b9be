// Instantiates the portable bwd path for fp16, head dim 256.
#include "cuda/sm80/launch_bwd.h"

template void sinkattn::cuda::sm80::launch_bwd<__half, 256>(const Params&, cudaStream_t);
