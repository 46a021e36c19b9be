// Moving tiles between global memory, padded shared memory (row stride smem_stride(cols)) and
// mma fragments. Tiles are rows x D of 16-bit elements with the head dim contiguous.
#pragma once

#include <cstdint>

#include "cuda/common/ptx.h"
#include "cuda/sm80/tile_size.h"

namespace sinkattn::cuda::sm80 {

// Asynchronously copy rows [0, ROWS) x [0, D) starting at src (row stride in elements) into
// dst; rows >= valid_rows are zero-filled (keys past the end then contribute exactly 0).
// THREADS is the block's thread count; kLine as for ptx::cp_async_16.
template <int ROWS, int D, int THREADS, bool kLine = false, typename T>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, int64_t row_stride,
                                                int64_t valid_rows) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kStride = smem_stride(D);
  if constexpr (THREADS % kChunks == 0 && ROWS % (THREADS / kChunks) == 0) {
    // Each thread copies one column chunk of rows r0, r0 + kStep, ...: its addresses advance by
    // constant strides, so a chunk costs a 64-bit add, a compare and a select (the loop below
    // spends ~27 instructions a chunk on signed division and 64-bit products: ~20% of the
    // d 64 forward's instructions per key block).
    constexpr int kStep = THREADS / kChunks;
    const int r0 = (int)(threadIdx.x / kChunks), c = (int)(threadIdx.x % kChunks);
    const int valid = (int)(valid_rows < ROWS ? (valid_rows > 0 ? valid_rows : 0) : ROWS);
    const T* s = src + r0 * row_stride + c * 8;
    T* d = dst + r0 * kStride + c * 8;
    const int64_t step = kStep * row_stride;
#pragma unroll
    for (int i = 0; i < ROWS / kStep; ++i, s += step) {
      const bool ok = r0 + i * kStep < valid;
      ptx::cp_async_16<kLine>(d + i * kStep * kStride, ok ? s : src, ok);
    }
  } else {
#pragma unroll
    for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += THREADS) {
      const int r = idx / kChunks, c = idx % kChunks;
      const bool ok = r < valid_rows;
      const T* s = ok ? src + r * row_stride + c * 8 : src;
      ptx::cp_async_16<kLine>(dst + r * kStride + c * 8, s, ok);
    }
  }
}

// Copy a warp's 16 x D tile, staged in shared memory, to global rows < valid_rows with
// 16-byte stores.
template <int D, typename T>
__device__ __forceinline__ void store_rows16(T* dst, int64_t row_stride, const T* stage,
                                             int64_t valid_rows, int lane) {
  constexpr int kChunks = D / 8;
  constexpr int kStride = smem_stride(D);
#pragma unroll
  for (int idx = lane; idx < 16 * kChunks; idx += 32) {
    const int r = idx / kChunks, c = idx % kChunks;
    if (r < valid_rows)
      *reinterpret_cast<uint4*>(dst + r * row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(stage + r * kStride + c * 8);
  }
}

// Block-wide copy of a ROWS x D tile staged in shared memory to global rows < valid_rows.
template <int ROWS, int D, int THREADS, typename T>
__device__ __forceinline__ void store_tile(T* dst, int64_t row_stride, const T* stage,
                                           int64_t valid_rows) {
  constexpr int kChunks = D / 8;
  constexpr int kStride = smem_stride(D);
  for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += THREADS) {
    const int r = idx / kChunks, c = idx % kChunks;
    if (r < valid_rows)
      *reinterpret_cast<uint4*>(dst + r * row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(stage + r * kStride + c * 8);
  }
}

// Write a warp's fp32 C fragments for a 16 x (NT*8) tile into shared memory as T (times mul).
template <int NT, typename T>
__device__ __forceinline__ void stage_acc(T* tile, int stride, const float (&acc)[NT][4],
                                          float mul, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    *reinterpret_cast<uint32_t*>(tile + g * stride + n * 8 + 2 * t) =
        ptx::pack2<T>(acc[n][0] * mul, acc[n][1] * mul);
    *reinterpret_cast<uint32_t*>(tile + (g + 8) * stride + n * 8 + 2 * t) =
        ptx::pack2<T>(acc[n][2] * mul, acc[n][3] * mul);
  }
}

// A warp's 16 x 16 block of fp32 C fragments (n-tiles a, then b) times mul, packed as T: the
// registers of one x4 stmatrix (a fragment's four registers are its four 8 x 8 matrices).
template <typename T>
__device__ __forceinline__ void pack_c16x16(uint32_t (&r)[4], const float (&a)[4],
                                            const float (&b)[4], float mul = 1.f) {
  r[0] = ptx::pack2<T>(a[0] * mul, a[1] * mul);
  r[1] = ptx::pack2<T>(a[2] * mul, a[3] * mul);
  r[2] = ptx::pack2<T>(b[0] * mul, b[1] * mul);
  r[3] = ptx::pack2<T>(b[2] * mul, b[3] * mul);
}

// Store a warp's 16 x 16 block of fp32 C fragments (n-tiles a, then b) as T at rows r0..,
// cols c0.. of a row-major tile: one stmatrix on sm_90, four 32-bit stores per thread before.
template <typename T>
__device__ __forceinline__ void store_c16x16(T* tile, int stride, int r0, int c0,
                                             const float (&a)[4], const float (&b)[4], int lane) {
  uint32_t r[4];
  pack_c16x16<T>(r, a, b);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  ptx::stmatrix_x4(tile + (r0 + lane % 8 + (lane / 8) % 2 * 8) * stride + c0 + lane / 16 * 8, r);
#else
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    *reinterpret_cast<uint32_t*>(tile + (r0 + g + i % 2 * 8) * stride + c0 + i / 2 * 8 + 2 * t) =
        r[i];
#endif
}

// A fragment (16x16) of a row-major tile: rows r0.., cols c0.. .
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int stride, int r0,
                                       int c0, int lane) {
  const int r = r0 + (lane % 8) + ((lane / 8) % 2) * 8, c = c0 + (lane / 16) * 8;
  ptx::ldmatrix_x4(a, tile + r * stride + c);
}

// A fragment (16x16) of the transpose of a row-major tile X: A[m][k] = X[k0 + k][m0 + m].
template <typename T>
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], const T* tile, int stride, int k0,
                                             int m0, int lane) {
  const int r = k0 + (lane % 8) + (lane / 16) * 8, c = m0 + ((lane / 8) % 2) * 8;
  ptx::ldmatrix_x4_trans(a, tile + r * stride + c);
}

// B fragments of two n-tiles (n0.., n0+8..) x k16 from a tile stored [n][k] (e.g. K for
// Q K^T): b[0], b[1] for n-tile 0 and b[2], b[3] for n-tile 1.
template <typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const T* tile, int stride, int n0,
                                          int k0, int lane) {
  const int r = n0 + (lane % 8) + (lane / 16) * 8, c = k0 + ((lane / 8) % 2) * 8;
  ptx::ldmatrix_x4(b, tile + r * stride + c);
}

// B fragments of two n-tiles from a tile stored [k][n] (e.g. V for P V).
template <typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const T* tile, int stride, int k0,
                                          int n0, int lane) {
  const int r = k0 + (lane % 8) + ((lane / 8) % 2) * 8, c = n0 + (lane / 16) * 8;
  ptx::ldmatrix_x4_trans(b, tile + r * stride + c);
}

// acc (MT*16 x NT*8) += A (MT*16 x K16*16, fragments in registers) * B, with B from a shared
// tile stored [n][k] (B_NK) or [k][n]. Each B fragment feeds MT m-tiles: more m-tiles per warp
// means fewer shared-memory reads per mma.
template <bool B_NK, int K16, int MT, int NT, typename T>
__device__ __forceinline__ void gemm_rs(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][K16][4],
                                        const T* b_tile, int stride, int n_base, int lane) {
#pragma unroll
  for (int kk = 0; kk < K16; ++kk) {
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      if constexpr (B_NK)
        load_b_nk(b, b_tile, stride, n_base + n * 8, kk * 16, lane);
      else
        load_b_kn(b, b_tile, stride, kk * 16, n_base + n * 8, lane);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        ptx::mma<T>(acc[m][n], a[m][kk], b[0], b[1]);
        ptx::mma<T>(acc[m][n + 1], a[m][kk], b[2], b[3]);
      }
    }
  }
}

template <bool B_NK, int K16, int NT, typename T>
__device__ __forceinline__ void gemm_rs(float (&acc)[NT][4], const uint32_t (&a)[K16][4],
                                        const T* b_tile, int stride, int n_base, int lane) {
  gemm_rs<B_NK>(reinterpret_cast<float(&)[1][NT][4]>(acc),
                reinterpret_cast<const uint32_t(&)[1][K16][4]>(a), b_tile, stride, n_base, lane);
}

// One m-tile (16 rows) with A read from shared memory, as gemm_ss_a below (its path for one
// m-tile: the 1-D accumulator compiles to fewer registers in the 252-register dk/dv kernel).
template <bool A_T, bool B_NK, int K16, int NT, typename T>
__device__ __forceinline__ void gemm_ss1(float (&acc)[NT][4], const T* a_tile, int a_stride,
                                        int a_r0, const T* b_tile, int b_stride, int n_base,
                                        int lane) {
#pragma unroll
  for (int kk = 0; kk < K16; ++kk) {
    uint32_t a[1][4];
    if constexpr (A_T)
      load_a_trans(a[0], a_tile, a_stride, kk * 16, a_r0, lane);
    else
      load_a(a[0], a_tile, a_stride, a_r0, kk * 16, lane);
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      if constexpr (B_NK)
        load_b_nk(b, b_tile, b_stride, n_base + n * 8, kk * 16, lane);
      else
        load_b_kn(b, b_tile, b_stride, kk * 16, n_base + n * 8, lane);
      ptx::mma<T>(acc[n], a[0], b[0], b[1]);
      ptx::mma<T>(acc[n + 1], a[0], b[2], b[3]);
    }
  }
}

// Same with A (MT m-tiles from row a_r0, 16 rows apart) read from shared memory as it goes:
// rows a_r0.. of a row-major tile, or with A_T the transpose of a tile stored [k][m] (its columns
// a_r0..), as dS K needs from dS^T.
template <bool A_T, bool B_NK, int K16, int MT, int NT, typename T>
__device__ __forceinline__ void gemm_ss_a(float (&acc)[MT][NT][4], const T* a_tile, int a_stride,
                                          int a_r0, const T* b_tile, int b_stride, int n_base,
                                          int lane) {
  if constexpr (MT == 1) {  // the 1-D accumulator path (see gemm_ss1)
    gemm_ss1<A_T, B_NK, K16>(acc[0], a_tile, a_stride, a_r0, b_tile, b_stride, n_base, lane);
    return;
  }
#pragma unroll
  for (int kk = 0; kk < K16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if constexpr (A_T)
        load_a_trans(a[m], a_tile, a_stride, kk * 16, a_r0 + 16 * m, lane);
      else
        load_a(a[m], a_tile, a_stride, a_r0 + 16 * m, kk * 16, lane);
    }
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      if constexpr (B_NK)
        load_b_nk(b, b_tile, b_stride, n_base + n * 8, kk * 16, lane);
      else
        load_b_kn(b, b_tile, b_stride, kk * 16, n_base + n * 8, lane);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        ptx::mma<T>(acc[m][n], a[m], b[0], b[1]);
        ptx::mma<T>(acc[m][n + 1], a[m], b[2], b[3]);
      }
    }
  }
}

template <bool B_NK, int K16, int MT, int NT, typename T>
__device__ __forceinline__ void gemm_ss(float (&acc)[MT][NT][4], const T* a_tile, int a_stride,
                                        int a_r0, const T* b_tile, int b_stride, int n_base,
                                        int lane) {
  gemm_ss_a<false, B_NK, K16>(acc, a_tile, a_stride, a_r0, b_tile, b_stride, n_base, lane);
}

// Two C fragments (n-tiles 2k, 2k + 1 of a 16-row fp32 tile) as the A fragment of T of k-step k.
template <typename T>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4],
                                       const float (&c1)[4]) {
  a[0] = ptx::pack2<T>(c0[0], c0[1]);
  a[1] = ptx::pack2<T>(c0[2], c0[3]);
  a[2] = ptx::pack2<T>(c1[0], c1[1]);
  a[3] = ptx::pack2<T>(c1[2], c1[3]);
}

// The C fragments of a 16 x (2*K16*8) fp32 tile as A fragments of T (for P V, dS K).
template <int K16, typename T>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[K16][4], const float (&c)[2 * K16][4]) {
#pragma unroll
  for (int kk = 0; kk < K16; ++kk) c_to_a<T>(a[kk], c[2 * kk], c[2 * kk + 1]);
}

template <int N>
__device__ __forceinline__ void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
}
template <int M, int N>
__device__ __forceinline__ void zero(float (&acc)[M][N][4]) {
#pragma unroll
  for (int m = 0; m < M; ++m) zero(acc[m]);
}

}  // namespace sinkattn::cuda::sm80
