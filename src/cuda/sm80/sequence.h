// Where one sequence's rows live, for fixed-length and packed (varlen) batches. Everything read
// from cu_seqlens is clamped to [0, total], and a length to its declared max (seqlen_q / _k),
// so bad prefix sums can never index out of bounds: not the packed rows, nor the arrays kept
// per row group (group0; the dq handoff's counters, which past their end had the backward
// count outside its workspace and wait on them forever). Such a call's outputs are NaN and its
// fault is reported (offsets_guard.h).
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/sm80/params.h"

namespace sinkattn::cuda::sm80 {

struct Sequence {
  int64_t len_q, len_k;    // rows of this sequence
  int64_t row_q, row_k;    // first row in the packed row space (b * Sq for fixed layouts)
  int64_t off_q, off_k;    // element offset of row 0, head 0 in q-like / k-like tensors
                           // (computed per tensor by offset())
  bool varlen;
  int64_t b;

  __device__ __forceinline__ Sequence(const Params& p, int64_t batch_index) : b(batch_index) {
    varlen = p.cu_seqlens_q != nullptr;
    if (varlen) {
      int64_t q0 = min(max(int64_t{p.cu_seqlens_q[b]}, int64_t{0}), p.total_q);
      int64_t q1 = min(max(int64_t{p.cu_seqlens_q[b + 1]}, int64_t{q0}), p.total_q);
      int64_t k0 = min(max(int64_t{p.cu_seqlens_k[b]}, int64_t{0}), p.total_k);
      int64_t k1 = min(max(int64_t{p.cu_seqlens_k[b + 1]}, int64_t{k0}), p.total_k);
      row_q = q0;
      row_k = k0;
      len_q = min(q1 - q0, p.seqlen_q);
      len_k = min(k1 - k0, p.seqlen_k);
    } else {
      row_q = b * p.seqlen_q;
      row_k = b * p.seqlen_k;
      len_q = p.seqlen_q;
      len_k = p.seqlen_k;
    }
  }

  // Element offset of (row, head) of a tensor laid out like q (is_q) or like k.
  __device__ __forceinline__ int64_t offset(const sinkattn_tensor& t, bool is_q, int64_t row,
                                            int64_t head) const {
    int64_t base = varlen ? (is_q ? row_q : row_k) * t.row_stride : b * t.batch_stride;
    return base + row * t.row_stride + head * t.head_stride;
  }

  // This sequence's first slot in a head's arrays kept per row group (kPrepRows query rows: the
  // dsink partials, the dq handoff counters). Fixed length: b x groups of Sq. Packed:
  // b + row_q / kPrepRows, which leaves at most one slot free after each sequence and fits
  // batch + total_q / kPrepRows slots (dispatch.cu row_groups) whatever the lengths; b x the
  // max's groups was thousands of times that for many short documents beside one long one.
  __device__ __forceinline__ int64_t group0(const Params& p) const {
    return varlen ? b + row_q / kPrepRows : b * p.dsink_blocks;
  }

  // Index of (head, row) in lse / delta: (B, Hq, Sq) fixed or (Hq, Tq) packed.
  __device__ __forceinline__ int64_t lse_index(const Params& p, int64_t head, int64_t row) const {
    return varlen ? head * p.total_q + row_q + row : (b * p.heads_q + head) * p.seqlen_q + row;
  }

  // The backward's view of query row `row` of `head`: lse in the exp2 domain and delta; past the
  // end, and where lse = -inf (a row with no key and no sink), lse2 = +inf and delta = 0, so that
  // P = 0 there.
  __device__ __forceinline__ void lse2_delta(const Params& p, int64_t head, int64_t row,
                                             float& lse2, float& delta) const {
    lse2 = INFINITY;
    delta = 0.f;
    if (row < len_q) {
      const int64_t li = lse_index(p, head, row);
      const float lse = p.lse[li];
      lse2 = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
      delta = p.delta[li];
    }
  }
};

}  // namespace sinkattn::cuda::sm80
