// Instantiates the portable fwd path for fp16, head dim 32.
#include "cuda/sm80/launch_fwd.h"

template void sinkattn::cuda::sm80::launch_fwd<__half, 32>(const Params&, cudaStream_t);
template void sinkattn::cuda::sm80::launch_fwd_packed<__half, 32>(const Params&, cudaStream_t);
