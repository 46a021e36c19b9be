// The one flat parameter block every portable kernel reads. Built once per call by
// src/cuda/dispatch.cu from validated sinkattn_*_params; kernels never see the public structs.
#pragma once

#include <cstdint>

#include "sinkattn/sinkattn.h"

namespace sinkattn::cuda::sm80 {

// Query rows per prep block, per dsink partial and per dq handoff counter (a "row group").
constexpr int kPrepRows = 64;

struct Params {
  // Tensors (strides in elements, head dim contiguous). Varlen ignores batch_stride.
  sinkattn_tensor q, k, v;  // (B, Sq, Hq, D) / (B, Sk, Hkv, D) or packed (T, H, D); read
  sinkattn_tensor out;      // forward: written; backward: the forward's output, read
  sinkattn_tensor dout;     // backward only: gradient w.r.t. out, read
  sinkattn_tensor dq, dk, dv;  // backward only: written

  const float* sinks;  // (Hq,) raw sink logits; nullptr = no sink
  float* lse;          // (B, Hq, Sq) or (Hq, Tq) fp32; forward writes it (nullptr = skip),
                       // backward reads it (never nullptr there)
  float* dsink;        // (Hq,) backward output; nullptr = not wanted

  const int32_t* cu_seqlens_q;  // (batch + 1,) device prefix sums; nullptr = fixed length
  const int32_t* cu_seqlens_k;  // (batch + 1,); set exactly when cu_seqlens_q is
  int64_t total_q, total_k;     // varlen: rows of q and of k/v; bounds for clamping cu_seqlens

  int64_t batch;             // B or number of sequences
  int64_t seqlen_q, seqlen_k;  // fixed lengths, or upper bounds on varlen lengths (grid size)
  int64_t heads_q, heads_kv;
  int32_t group;             // heads_q / heads_kv: query heads sharing one kv head
  float scale;               // softmax scale on q.k
  float scale_log2;          // scale * log2(e): scores are exponentiated with exp2
  int64_t window_left;       // keys visible before the aligned position; -1 = unbounded
  int64_t window_right;      // keys visible after it (0 when causal); -1 = unbounded
  int32_t zigzag_rank;       // fused zigzag CP: this rank r (see sinkattn_problem; Mask::of)
  int32_t zigzag_world;      // fused zigzag CP world size W; 0 = off (bottom-right alignment)

  // Backward workspace (from the caller; see bwd_workspace_size in dispatch.cu).
  float* delta;          // lse layout: sum_d dout * out per query row (prep or band dq kernel)
  float* dsink_partial;  // (Hq, row_groups) partial dsink sums, one per row group a sequence
                         // has (Sequence::group0); packed: zeroed first, for the slots between
                         // sequences that nothing writes
  int64_t row_groups;    // slots per query head of the arrays kept per row group: the dsink
                         // partials and the dq handoff counters (dispatch.cu row_groups)
  int32_t dsink_blocks;  // preprocess blocks per sequence (grid.x of the preprocess kernel)
  int32_t dq_atomic;     // 1: the dk/dv kernel adds dS K into dq_accum with atomics (faster, not
                         // bit-reproducible); 0: bwd_dq_kernel recomputes dq (deterministic)
  float* dq_accum;       // (rows, Hq, D) fp32, rows = B * Sq or Tq; when dq_atomic or dq_flags
  int32_t* dq_flags;     // the narrow-window Hopper backward's dq handoff (sm90/bwd_kernel.h), in
                         // either mode; nullptr = off. (Hq, row_groups): per row group, how
                         // many key blocks have passed their dq partial on, in dq_accum (the
                         // prep zeroes it). dq then needs no conversion.
  int32_t bwd_kv_group;  // the dK/dV kernels' launch order (grid.h kv_group_grid_pos): the key
                         // blocks of this many kv heads at a time (set by their launchers)
  int32_t band_dq;       // 1: the Hopper band dq kernel (sm90/bwd_band_dq_kernel.h) writes dq,
                         // delta and the dsink partials, in either mode, before the dk/dv kernel,
                         // which skips dQ (dq_atomic 0, no dq_accum); no prep

  // Packed-group forward workspace (fwd_workspace_size in dispatch.cu) when it splits the keys.
  int32_t packed_splits;   // key splits (gridDim.z of fwd_packed_kernel); 1 = no workspace
  float* packed_partial;   // per split, sequence, kv head and packed row: D output sums, max, sum

  // Hopper persistent forward (sm90/tile_sched.h): the count of tiles handed out past the first
  // gridDim.x, zeroed before each launch (fwd workspace).
  uint32_t* tile_counter;
};

}  // namespace sinkattn::cuda::sm80
