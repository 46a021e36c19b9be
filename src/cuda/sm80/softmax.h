// Online softmax over a warp's MT*16 query rows (each thread holds rows g and g + 8 of each of
// its MT m-tiles: row index r = 2 * m + half). Scores stay raw; the running max m is kept in
// the exp2 domain (times scale * log2 e). A learned sink is folded in once at the start:
// m = sink * log2 e and l = exp2(sink - m) = 1, counted by one thread of the four that share a
// row (l is kept as per-thread partial sums and reduced at the end).
#pragma once

#include <cmath>

#include "cuda/common/ptx.h"

namespace sinkattn::cuda::sm80 {

template <int MT, int NT>
struct OnlineSoftmax {
  static constexpr int R = 2 * MT;
  float m[R];  // running max (exp2 domain), -inf until a key or the sink is seen
  float l[R];  // this thread's share of the running denominator

  __device__ __forceinline__ void init(const float* sinks, int head, int lane) {
    const float sink = sinks ? sinks[head] * 1.4426950408889634f : -INFINITY;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      m[r] = sink;
      l[r] = (sinks && lane % 4 == 0) ? 1.f : 0.f;
    }
  }

  // s (raw scores, -inf where masked) becomes P (unnormalised, relative to the new max);
  // corr[r] is the factor by which output row r must be rescaled.
  __device__ __forceinline__ void update(float (&s)[MT][NT][4], float scale_log2,
                                         float (&corr)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int mt = r / 2, h = r % 2;
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * h], s[mt][n][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float m_new = fmaxf(m[r], mx * scale_log2);
      // A row that has seen nothing yet keeps m = -inf; use 0 so no inf - inf appears.
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      corr[r] = ptx::exp2f_approx(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[mt][n][2 * h] = ptx::exp2f_approx(fmaf(s[mt][n][2 * h], scale_log2, -m_use));
        s[mt][n][2 * h + 1] = ptx::exp2f_approx(fmaf(s[mt][n][2 * h + 1], scale_log2, -m_use));
        sum += s[mt][n][2 * h] + s[mt][n][2 * h + 1];
      }
      l[r] = l[r] * corr[r] + sum;
    }
  }

  // inv[r] = 1 / denominator (0 for a row that saw neither key nor sink) and the natural-log
  // lse (-inf for such a row).
  __device__ __forceinline__ void finish(float (&inv)[R], float (&lse)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float sum = l[r];
      sum += __shfl_xor_sync(0xffffffff, sum, 1);
      sum += __shfl_xor_sync(0xffffffff, sum, 2);
      inv[r] = sum > 0.f ? 1.f / sum : 0.f;
      lse[r] = sum > 0.f ? (m[r] + __log2f(sum)) * 0.6931471805599453f : -INFINITY;
    }
  }
};

// Multiplies row r of a C-fragment tile by f[r].
template <int MT, int NT>
__device__ __forceinline__ void scale_rows(float (&acc)[MT][NT][4], const float (&f)[2 * MT]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      acc[m][n][0] *= f[2 * m];
      acc[m][n][1] *= f[2 * m];
      acc[m][n][2] *= f[2 * m + 1];
      acc[m][n][3] *= f[2 * m + 1];
    }
}

}  // namespace sinkattn::cuda::sm80
