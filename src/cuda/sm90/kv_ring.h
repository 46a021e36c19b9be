// The ring of k / v stages the forward streams key blocks through: S stages of BN keys, k and v
// each with a "full" barrier (one producer arrival plus the TMA bytes) and an "empty" one (an
// arrival from every consumer thread once its products have read the stage). Fills are counted
// from the kernel's start, so fill i sits in stage i % S and its barriers' phase is (i / S) & 1.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/sm90/tma.h"

namespace sinkattn::cuda::sm90 {

template <int D, int BN, int S>
struct KvRing {
  static constexpr int kSub = D / 64;          // 64-column sub-tiles of a key row
  static constexpr int kBytes = BN * D * 2;    // one k or v stage
  char* k;                                     // stage 0 of k; stage s at k + s * kBytes
  char* v;                                     // the same for v
  uint64_t* bars;                              // [S] k full, [S] v full, [S] k empty, [S] v empty

  __device__ __forceinline__ uint64_t* k_full(int s) const { return bars + s; }
  __device__ __forceinline__ uint64_t* v_full(int s) const { return bars + S + s; }
  __device__ __forceinline__ uint64_t* k_empty(int s) const { return bars + 2 * S + s; }
  __device__ __forceinline__ uint64_t* v_empty(int s) const { return bars + 3 * S + s; }

  // The stage of fill i and the parity of its barriers' phase.
  __device__ __forceinline__ static void slot(int i, int& s, uint32_t& phase) {
    s = i % S;
    phase = (i / S) & 1;
  }

  // One thread, at the kernel's start.
  __device__ __forceinline__ void init(uint32_t consumer_threads) const {
    mbar_init_ring(k_full(0), k_empty(0), S, consumer_threads);
    mbar_init_ring(v_full(0), v_empty(0), S, consumer_threads);
  }

  // Producer: fill i with the keys from row `row` of kv head hk in batch entry bq, each of k and v
  // once the consumers have released the stage's previous fill.
  __device__ __forceinline__ void fill(int i, const CUtensorMap* map_k, const CUtensorMap* map_v,
                                       int row, int hk, int bq) const {
    int s;
    uint32_t phase;
    slot(i, s, phase);
    if (i >= S) mbar_wait(k_empty(s), phase ^ 1);
    mbar_expect_tx(k_full(s), kBytes);
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub)
      tma_load_4d(k + s * kBytes + sub * BN * 128, map_k, k_full(s), 64 * sub, row, hk, bq);
    if (i >= S) mbar_wait(v_empty(s), phase ^ 1);
    mbar_expect_tx(v_full(s), kBytes);
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub)
      tma_load_4d(v + s * kBytes + sub * BN * 128, map_v, v_full(s), 64 * sub, row, hk, bq);
  }

  // Consumer: hands back fill i unread, once it has landed (an arrival before would count toward
  // the stage's previous fill).
  __device__ __forceinline__ void skip(int i) const {
    int s;
    uint32_t phase;
    slot(i, s, phase);
    mbar_wait(k_full(s), phase);
    mbar_arrive(k_empty(s));
    mbar_wait(v_full(s), phase);
    mbar_arrive(v_empty(s));
  }
};

}  // namespace sinkattn::cuda::sm90
