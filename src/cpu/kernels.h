// Hot micro-kernels of the CPU backend, on contiguous fp32 tiles. Each is built for x86-64-v4
// (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline x86-64, and the best one the CPU runs is picked
// on first use, so the default build runs on any x86-64 and still uses wide FMA where it can.
// Each call does a whole tile of work, so the indirect call costs nothing measurable.
// SINKATTN_CPU_ISA=v3|baseline (environment) caps the choice, to test the other builds.
#pragma once

#include <cstdint>

namespace sinkattn {
namespace cpu {

// C (m x n) = A (m x k) . B (k x n), or C += that when accumulate. A's element (i, p) is at
// a[i * a_rs + p * a_cs] (row-major: a_rs = lda, a_cs = 1; transposed: a_rs = 1, a_cs = lda);
// B and C are row-major. m % 8 == 0 and n % 32 == 0 (tiles are padded to that).
void gemm(int m, int n, int k, const float* a, int a_rs, int a_cs, const float* b, int ldb,
          float* c, int ldc, bool accumulate);

// dst (cols x rows) = transpose of src (rows x cols).
void transpose(const float* src, int lds, int rows, int cols, float* dst, int ldd);

// Online-softmax step of the forward over a score tile s (rows x cols, masked entries -inf):
// per row, m = max(m, rowmax(s)), s <- exp(s - m), l = l * alpha + rowsum(s), o *= alpha with
// alpha = exp(m_old - m). A row whose max stays -inf gets p = 0 and keeps o and l.
void softmax_step(float* s, int lds, int rows, int cols, float* m, float* l, float* o, int ldo,
                  int ocols);

// Backward on a tile: p = exp(s - lse) into s, ds = p * (dp - delta) into dp (per row lse, delta;
// lse = +inf gives p = 0).
void softmax_grad(float* s, float* dp, int ld, int rows, int cols, const float* lse,
                  const float* delta);

// Converts rows x d elements of dtype (sinkattn_dtype) at src (row stride in elements, head dim
// contiguous) into dst * mul, zero-filling columns [d, ldd) and rows [rows, rows_pad).
void load_rows(int dtype, const void* src, int64_t row_stride, int rows, int d, float mul,
               float* dst, int ldd, int rows_pad);

// Writes src[r][c] * row_mul[r] (or * 1 when row_mul is null) as dtype into dst.
void store_rows(int dtype, const float* src, int lds, int rows, int d, const float* row_mul,
                void* dst, int64_t row_stride);

// out[r] = sum_c a[r][c] * b[r][c].
void dot_rows(const float* a, const float* b, int ld, int rows, int d, float* out);

}  // namespace cpu
}  // namespace sinkattn
