// dq of the narrow-window backward (bwd_kernel.h with kNarrow), handed from key block to key
// block instead of summed by TMA reductions: the key blocks that walk a query block (one band:
// a contiguous run, cuda::dq_turn) take it in key order. The first stores its fp32 part into
// dq_accum (unzeroed), each next one adds its part to the stored partial and passes it on, and
// the last scales it and writes dq in the output dtype. So the prep zeroes only counters, no
// conversion kernel runs, and the sum has a fixed order: bit-identical run to run.
// Waits go only to lower key blocks of the same kv head and sequence, which launch first
// (grid.h's order), and the walk takes its producing steps ahead of its consuming ones
// (cuda::StepWalk), so neighbours started together rarely wait.
// The consumer warps never touch a global counter: two otherwise idle warps of the producer
// warpgroup do. One acquires the query block's counter and loads the partial by TMA into the
// consumers' dq staging ahead of the step; the other waits until all 8 consumer warps have
// stored their piece (a shared-memory count) and releases it with one red.release.gpu. Done by
// the consumers themselves, the acquire, the partial loads and the release's fence stalled
// them (H200, window 128 16k: main kernel 0.42 -> 0.59 ms; see docs/PERFORMANCE.md).
// A counter (per query head and kPrepRows rows, zeroed by the prep) counts the key blocks that
// have passed the query block on.
#pragma once

#include <cstdint>

#include "cuda/common/mask_rule.h"
#include "cuda/common/ptx.h"
#include "cuda/sm80/bwd_prep.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm90/tma.h"

namespace sinkattn::cuda::sm90 {

// A step's handoff. The producer warp writes it into the step's stage for the consumers (so
// that they keep no sequence or position registers across the step for it); the fetching and
// releasing warps find it themselves.
struct DqStep {
  float* partial;    // dq_accum at the step's first query row, its head
  void* out;         // dq there (16-bit elements)
  int32_t* counter;  // the query block's
  int prior;         // key blocks before this one that pass the block on
  int last;          // 1: none after it
  int rows;          // of the step's rows, how many lie inside the sequence

  // Query block mb of `head`, walked by key block nb of sequence seq under `mask`; group0:
  // seq.group0(p), computed once by the caller, in 32 bits (dispatch.cu dq_handoff; recomputed
  // per step or kept in 64, ptxas spilled 8 bytes in the d 64 kernel).
  __device__ __forceinline__ static DqStep of(const sm80::Params& p, const sm80::Sequence& seq,
                                              const cuda::Mask& mask, int group0, int64_t head,
                                              int64_t nb, int bn, int bm, int64_t mb, int D) {
    const int64_t m0 = mb * bm;
    const cuda::DqTurn turn = cuda::dq_turn(mask, nb, bn, bm, mb);
    DqStep st;
    st.partial = p.dq_accum + ((seq.row_q + m0) * p.heads_q + head) * D;
    st.out = static_cast<uint16_t*>(p.dq.data) + seq.offset(p.dq, true, m0, head);
    st.counter = p.dq_flags + sm80::row_group(p, group0, head, m0);
    st.prior = turn.prior;
    st.last = turn.last;
    st.rows = (int)cuda::imin(int64_t{bm}, seq.len_q - m0);
    return st;
  }
};

constexpr int kDqWarps = 8;  // consumer warps storing a piece of each step: 2 x 4

// The fetching warp, one thread: waits until the key blocks before this one have passed the
// step's query block on, then loads their partial by TMA (map: dq_accum in [64 rows][32
// columns] boxes) into the consumers' dq staging, consumer c's 64 x 64 part (queries 64c.. at
// d 64, columns 64c.. at d 128; two [64][32] chunks) at dst + c * consumer_bytes, completing
// `full`.
template <int D>
__device__ __forceinline__ void fetch_partial(const DqStep& st, const CUtensorMap* map,
                                              uint64_t* full, char* dst, int consumer_bytes,
                                              int head, int row0) {
  // Polled relaxed, with a pause (an acquiring load invalidates the SM's L1 every time), then
  // one fence: together an acquire.
  while (ptx::ld_relaxed_gpu(st.counter) < st.prior) __nanosleep(64);
  ptx::fence_acq_rel_gpu();
  fence_proxy_async_global();  // the generic-proxy stores just acquired, read by TMA
  mbar_expect_tx(full, 2 * 64 * 64 * 4);
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int ch = 0; ch < 2; ++ch) {
      const int q_sub = D == 64 ? c : 0, d_sub = D == 64 ? 0 : c;
      tma_load_3d(dst + c * consumer_bytes + ch * 64 * 128, map, full, 64 * d_sub + 32 * ch, head,
                  row0 + 64 * q_sub);
    }
}

// One consumer warp's piece of one step: rows row0 + g (+ 8) of the step, columns col0 + 2t
// (+1) of each 8-column n-tile, as in its wgmma accumulator fragment. Built from the step's
// DqStep before the step's stage is freed (the producer then fills it for a later step).
template <typename T, int D>
struct DqHandoff {
  float* part;  // this thread's first row in dq_accum (the second is 8 below)
  T* out;       // the same in dq
  int prior, rows;  // rows: of its two rows, how many lie inside the sequence
  bool last;

  __device__ __forceinline__ DqHandoff(const sm80::Params& p, const DqStep& st, int row0, int col0,
                                       int lane)
      : prior(st.prior), last(st.last != 0) {
    const int row = row0 + lane / 4, col = col0 + 2 * (lane % 4);
    part = st.partial + (int64_t)row * p.heads_q * D + col;
    out = static_cast<T*>(st.out) + row * p.dq.row_stride + col;
    rows = cuda::imax(0, cuda::imin(2, (st.rows - row + 7) / 8));
  }

  // dq, with the partial added: passed on (returns true), or (last) scaled into the output.
  __device__ __forceinline__ bool pass(const sm80::Params& p, const float (&dq)[8][4]) const {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (r >= rows) break;
      float* dst = part + r * 8 * p.heads_q * D;
      T* o = out + r * 8 * p.dq.row_stride;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const float x = dq[nt][2 * r], y = dq[nt][2 * r + 1];
        if (last)
          *reinterpret_cast<uint32_t*>(o + 8 * nt) = ptx::pack2<T>(x * p.scale, y * p.scale);
        else
          __stcg(reinterpret_cast<float2*>(dst + 8 * nt), make_float2(x, y));
      }
    }
    return !last;
  }
};

}  // namespace sinkattn::cuda::sm90
