// Instantiates the portable fwd path for fp16, head dim 128.
#include "cuda/sm80/launch_fwd.h"

template void sinkattn::cuda::sm80::launch_fwd<__half, 128>(const Params&, cudaStream_t);
template void sinkattn::cuda::sm80::launch_fwd_packed<__half, 128>(const Params&, cudaStream_t);
