// Online softmax over a warp's MT*16 query rows (each thread holds rows g and g + 8 of each of
// its MT m-tiles: row index r = 2 * m + half). Scores stay raw; the running max m is kept in
// the exp2 domain (times scale * log2 e). A learned sink is folded in once at the start:
// m = sink * log2 e and l = exp2(sink - m) = 1, counted by one thread of the four that share a
// row (l is kept as per-thread partial sums and reduced at the end).
#pragma once

#include <cmath>

#include "cuda/common/ptx.h"

namespace sinkattn::cuda::sm80 {

// kLazy: lazy rescaling (below); the portable forward takes it where the output accumulator is
// wide (head dim >= 128).
template <int MT, int NT, bool kLazy = false>
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
  // The same from the sink logit already in the exp2 domain (-inf: no sink).
  __device__ __forceinline__ void init_log2(float sink_log2, int lane) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      m[r] = sink_log2;
      l[r] = (sink_log2 != -INFINITY && lane % 4 == 0) ? 1.f : 0.f;
    }
  }

  // Lazy rescaling (as FlashAttention-4 does): the running max moves only when a block raises
  // some row of the warp by more than kStale (log2 domain). Until then P stays below 2^kStale
  // (harmless in fp32 and in bf16 / fp16 P), the output needs no rescale, and the warp skips the
  // corr exps and the multiply of its whole O accumulator; once the max settles that is every
  // block. lse and the output are the same quantities either way. H200, portable path: llama
  // d 128 forward +4-6%; at d 64 the vote and the selects cost more than they save (-2 to -4%),
  // and the Hopper forward gained nothing at either head dim.
  static constexpr float kStale = 8.f;

  // s (raw scores, -inf where masked) becomes P (unnormalised, relative to the running max).
  // Returns whether the warp rescaled (warp-uniform; always without kLazy): only then must
  // output row r be multiplied by corr[r].
  __device__ __forceinline__ bool update(float (&s)[MT][NT][4], float scale_log2, float (&corr)[R]) {
    float mx[R];
    bool grows = false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      mx[r] = row_max(s, r, scale_log2);
      grows |= mx[r] > m[r] + kStale;  // false while both are -inf
    }
    const bool rescale = !kLazy || __any_sync(0xffffffff, grows);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float m_new = rescale ? fmaxf(m[r], mx[r]) : m[r];
      const float m_use = usable(m_new);
      corr[r] = rescale ? ptx::exp2f_approx(m[r] - m_use) : 1.f;
      m[r] = m_new;
      const float sum = exp_row<0, NT>(s, r, scale_log2, m_use);
      l[r] = rescale ? l[r] * corr[r] + sum : l[r] + sum;
    }
    return rescale;
  }

  // update in two phases, for a one-pass tile whose output is still zero (no corr needed):
  // begin() takes the rows' max over the whole block (and rescales the sink's share of l),
  // exps<N0, N1>() turns columns [8 N0, 8 N1) into P, so that the caller can issue each column
  // range's P V while the next range's exps run.
  template <int N>
  __device__ __forceinline__ void begin(const float (&s)[MT][N][4], float scale_log2, float (&m_use)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float m_new = fmaxf(m[r], row_max(s, r, scale_log2));
      m_use[r] = usable(m_new);
      l[r] *= ptx::exp2f_approx(m[r] - m_use[r]);
      m[r] = m_new;
    }
  }
  template <int N0, int N1, int N>
  __device__ __forceinline__ void exps(float (&s)[MT][N][4], float scale_log2, const float (&m_use)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) l[r] += exp_row<N0, N1>(s, r, scale_log2, m_use[r]);
  }

  // Max of row r's raw scores over the quad that shares it, in the exp2 domain.
  template <int N>
  __device__ __forceinline__ static float row_max(const float (&s)[MT][N][4], int r, float scale_log2) {
    const int mt = r / 2, h = r % 2;
    float x = -INFINITY;
#pragma unroll
    for (int n = 0; n < N; ++n) x = fmaxf(x, fmaxf(s[mt][n][2 * h], s[mt][n][2 * h + 1]));
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
    return x * scale_log2;
  }
  // A row that has seen nothing yet keeps m = -inf; exps use 0 then, so no inf - inf appears.
  __device__ __forceinline__ static float usable(float m_new) { return m_new == -INFINITY ? 0.f : m_new; }
  // Columns [8 N0, 8 N1) of row r become P relative to m_use; returns this thread's share of
  // their sum.
  template <int N0, int N1, int N>
  __device__ __forceinline__ static float exp_row(float (&s)[MT][N][4], int r, float scale_log2,
                                                  float m_use) {
    const int mt = r / 2, h = r % 2;
    float sum = 0.f;
#pragma unroll
    for (int n = N0; n < N1; ++n) {
      s[mt][n][2 * h] = ptx::exp2f_approx(fmaf(s[mt][n][2 * h], scale_log2, -m_use));
      s[mt][n][2 * h + 1] = ptx::exp2f_approx(fmaf(s[mt][n][2 * h + 1], scale_log2, -m_use));
      sum += s[mt][n][2 * h] + s[mt][n][2 * h + 1];
    }
    return sum;
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
