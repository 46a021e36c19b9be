// Helpers compiled for the kernels and for the host: the CPU tests then check the code the
// kernels run (tests/cpp/test_exp2_fma.cpp, test_fragment_cols.cpp, test_mask_rule.cpp,
// test_slots.cpp, test_step_walk.cpp).
#pragma once

#if defined(__CUDACC__)
#define SINKATTN_HOST_DEVICE __host__ __device__ __forceinline__
#define SINKATTN_UNROLL _Pragma("unroll")
#else
#define SINKATTN_HOST_DEVICE inline
#define SINKATTN_UNROLL
#endif
