// Warpgroup matrix products (sm_90a): shared-memory matrix descriptors for the 128-byte
// swizzled tiles TMA writes, and the fences that order wgmma's asynchronous register use.
//
// Every tile here is made of [rows][64] 16-bit sub-tiles, 128 bytes per row, 1024-byte aligned,
// swizzled the way TMA's SWIZZLE_128B writes them (16-byte chunk c of row r lands at chunk
// c ^ (r % 8)). Descriptor fields (PTX ISA, "matrix descriptor"), in 16-byte units:
//   K-major operand (rows = M or N, 64 contiguous k): stride byte offset = 1024 (8 rows of
//   128 bytes), leading byte offset unused; the k-step kk starts 32 * (kk % 4) bytes into the
//   row, in sub-tile kk / 4.
//   N-major operand (rows = K, 64 contiguous n): stride byte offset = 1024 (8 k-rows), leading
//   byte offset = the distance between the sub-tiles holding n 0..63 and n 64..127; the k-step
//   kk starts 16 rows (2048 bytes) further down.
#pragma once

#include <cstdint>

#include "cuda/sm90/wgmma_ops.h"

namespace sinkattn::cuda::sm90 {

__device__ __forceinline__ uint64_t smem_desc(const void* tile, uint32_t lead_bytes) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((lead_bytes & 0x3FFFF) >> 4) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;  // 8 rows of 128 bytes
  d |= uint64_t{1} << 62;                       // 128-byte swizzle
  return d;
}

// Byte offset of element (row, col) in a [rows][64] 16-bit or [rows][32] fp32 tile of 128-byte
// rows under TMA's 128-byte swizzle (the tile 1024-byte aligned).
__device__ __forceinline__ int swizzle128(int row, int col_bytes) {
  return row * 128 + ((((col_bytes >> 4) ^ row) & 7) << 4) + (col_bytes & 15);
}

// The descriptor of a tile moved by `bytes`: the start address field counts 16-byte units, and
// shared memory (under 256 KB) never carries out of its 14 bits. Adding to one descriptor per tile
// lets the compiler build it once and step it with one add per k-step.
__device__ __forceinline__ uint64_t desc_add(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

// Descriptor of k-step kk of a K-major tile whose sub-tiles are sub_bytes apart.
template <typename T>
__device__ __forceinline__ uint64_t kmajor_desc(const T* tile, int kk, int sub_bytes) {
  return desc_add(smem_desc(tile, 16), (kk / 4) * sub_bytes + (kk % 4) * 32);
}

// Descriptor of k-step kk (16 rows) of an N-major tile whose sub-tiles are sub_bytes apart.
template <typename T>
__device__ __forceinline__ uint64_t nmajor_desc(const T* tile, int kk, int sub_bytes) {
  return desc_add(smem_desc(tile, sub_bytes), kk * 16 * 128);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Pins registers an in-flight wgmma reads or writes: the compiler may neither read an
// accumulator before the wait that completes it nor reuse an A register before then.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(r[i][e])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

}  // namespace sinkattn::cuda::sm90
