// Thin wrappers over the sm_80 PTX the portable kernels use: mma.sync m16n8k16 (fp32
// accumulate), ldmatrix, cp.async, and packing fp32 pairs into 16-bit pairs.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B 16x8:  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C 16x8:  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// so the C fragments of two adjacent n-tiles, packed to 16 bits, are an A fragment.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "cuda/common/exp2_fma.h"

namespace sinkattn::cuda::ptx {

template <typename T> struct MmaType;
template <> struct MmaType<__nv_bfloat16> { static constexpr bool kBf16 = true; };
template <> struct MmaType<__half> { static constexpr bool kBf16 = false; };

// d += a * b for one 16x8x16 tile.
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  if constexpr (MmaType<T>::kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// The reverse (sm_90): lanes 8i..8i+7 give the row addresses that matrix i (register i) goes to.
// Below sm_90 there is no such instruction: a caller there traps instead of storing nothing.
__device__ __forceinline__ void stmatrix_x4(void* p, const uint32_t (&r)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n"
               ::"r"(smem_addr(p)), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3]) : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// 16-byte global->shared copy; src_bytes = 0 fills the destination with zeros (rows past the
// end of a sequence) without reading src, which must still be a valid-looking address.
// kLine: L2 fetches the whole 128-byte line at the first miss (`.L2::128B`) instead of sector
// by sector, for streams that read every byte of their lines once.
template <bool kLine = false>
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  if constexpr (kLine)
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Two fp32 values packed into one 32-bit register of T (low half = x).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y) {
  if constexpr (MmaType<T>::kBf16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t v) {
  if constexpr (MmaType<T>::kBf16) {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
  } else {
    return __half22float2(*reinterpret_cast<__half2*>(&v));
  }
}

// addr[0] += x, addr[1] += y in global memory (fire-and-forget; one vector op on sm_90).
__device__ __forceinline__ void red_add2(float* addr, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(addr), "f"(x), "f"(y) : "memory");
#else
  atomicAdd(addr, x);
  atomicAdd(addr + 1, y);
#endif
}

// A counter in global memory polled relaxed (then one fence.acq_rel makes the poll an acquire)
// and increased with release semantics, at GPU scope: writes before the release are visible to
// a thread whose acquire reads the new count.
__device__ __forceinline__ int ld_relaxed_gpu(const int32_t* addr) {
  int v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(addr) : "memory");
  return v;
}
__device__ __forceinline__ void fence_acq_rel_gpu() {
  asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
}
__device__ __forceinline__ void red_release_gpu_add(int32_t* addr, int v) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;\n" ::"l"(addr), "r"(v) : "memory");
}
// The same for a counter in shared memory at CTA scope.
__device__ __forceinline__ int ld_acquire_cta_shared(const int32_t* addr) {
  int v;
  asm volatile("ld.acquire.cta.shared::cta.b32 %0, [%1];\n"
               : "=r"(v)
               : "r"((uint32_t)__cvta_generic_to_shared(addr))
               : "memory");
  return v;
}
__device__ __forceinline__ void red_release_cta_shared_add(int32_t* addr, int v) {
  asm volatile("red.release.cta.shared::cta.add.s32 [%0], %1;\n" ::"r"(
                   (uint32_t)__cvta_generic_to_shared(addr)),
               "r"(v)
               : "memory");
}

__device__ __forceinline__ float exp2f_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// exp2 of element n of a row: on the FMA pipe where bit n % 8 of kFma is set, else on the SFU.
template <unsigned kFma>
__device__ __forceinline__ float exp2f_split(float x, int n) {
  return (kFma >> (n % 8)) & 1u ? exp2f_fma(x) : exp2f_approx(x);
}

}  // namespace sinkattn::cuda::ptx
