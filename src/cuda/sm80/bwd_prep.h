// Small memory-bound kernels around the backward: delta_i = sum_d dout * out (plus the per-block
// dsink partial sums and, in atomic dq mode, zeroing the fp32 dq accumulator, or with the dq
// handoff its counters and the dq of rows that see no key; the Hopper band dq kernel writes
// delta and the partials itself), the fixed-order dsink reduction, and the conversion of the dq
// accumulator to the output dtype.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/mask_rule.h"
#include "cuda/common/ptx.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"

namespace sinkattn::cuda::sm80 {

constexpr int kPrepWarps = 4;

// Lanes per query row: one 16-byte chunk each, rounded up to a power of two for the shuffles.
constexpr int prep_lanes(int d) { return d / 8 <= 4 ? 4 : d / 8 <= 8 ? 8 : d / 8 <= 16 ? 16 : 32; }

// Slot of query rows [m0, m0 + kPrepRows) of `head` of a sequence (m0 < its len_q) in the
// arrays kept per row group: the dsink partials, the dq handoff counters. group0: the
// sequence's Sequence::group0 (the dq handoff keeps it in 32 bits: dq_handoff.h).
__device__ __forceinline__ int64_t row_group(const Params& p, int64_t group0, int64_t head,
                                             int64_t m0) {
  return head * p.row_groups + group0 + m0 / kPrepRows;
}

// Query heads per prep block: a row's heads lie next to each other in memory, so the block's
// loads cover whole runs of them rather than one head's 128-byte rows 8 KB apart (gptoss).
constexpr int prep_heads(int d) {
  return kPrepWarps * 32 / prep_lanes(d) < 8 ? kPrepWarps * 32 / prep_lanes(d) : 8;
}

// Block (x, y, z): rows [64 x, 64 x + 64) of heads [prep_heads y, ...) of sequence z, or where
// grid.h query_slot_grid (packed, most of a grid row per sequence idle), of row group x (the
// slot of sequence.h group0), z = 0. A group of prep_lanes lanes takes one (row, head) pair;
// the block's pairs run heads fastest, and each thread keeps one head (its dsink partial). Loads
// of kBatch passes are issued together.
template <typename T, int D>
__global__ void __launch_bounds__(kPrepWarps * 32) bwd_prep_kernel(const __grid_constant__ Params p) {
  constexpr int kLanes = prep_lanes(D), kHeads = prep_heads(D);
  constexpr int kPairs = kPrepWarps * 32 / kLanes;  // (row, head) pairs per pass
  constexpr int kRowsPerPass = kPairs / kHeads, kBatch = 4;
  static_assert(kPairs % kHeads == 0 && kPrepRows % (kRowsPerPass * kBatch) == 0,
                "whole passes; a warp's lanes share their row");
  __shared__ float pair_sum[kPairs];
  const int lane = threadIdx.x % 32, pair = threadIdx.x / kLanes;
  const int c = lane % kLanes;  // this lane's 16-byte chunk of the row
  const int64_t head = (int64_t)blockIdx.y * kHeads + pair % kHeads;
  const bool head_ok = head < p.heads_q;
  int64_t b = blockIdx.z, m0 = (int64_t)blockIdx.x * kPrepRows;
  if (query_slot_grid(p, kPrepRows)) {
    const PackedRows r = packed_q(p);
    b = packed_slot_sequence(r, kPrepRows, (int)blockIdx.x);
    m0 = ((int64_t)blockIdx.x - r.start((int)b, kPrepRows)) * kPrepRows;
    if (m0 < 0) return;  // before the first sequence's rows
  }
  const Sequence seq(p, b);
  if (m0 >= seq.len_q) return;  // packed: past this sequence's rows (the whole block)
  const float sink = p.sinks && head_ok ? p.sinks[head] : 0.f;
  float dsink = 0.f;  // this lane's rows (lanes with c == 0 only)
  const Mask mask = Mask::of(p, seq);
  if (p.dq_flags != nullptr && head_ok && pair < kHeads && c == 0)
    p.dq_flags[row_group(p, seq.group0(p), head, m0)] = 0;
  for (int r0 = pair / kHeads; r0 < kPrepRows; r0 += kRowsPerPass * kBatch) {
    uint4 ov[kBatch], gv[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = m0 + r0 + j * kRowsPerPass;
      ov[j] = gv[j] = make_uint4(0, 0, 0, 0);
      if (i < seq.len_q && head_ok && c < D / 8) {
        ov[j] = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.out.data) +
                                                seq.offset(p.out, true, i, head) + c * 8);
        gv[j] = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.dout.data) +
                                                seq.offset(p.dout, true, i, head) + c * 8);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = m0 + r0 + j * kRowsPerPass;
      const uint32_t* ow = reinterpret_cast<const uint32_t*>(&ov[j]);
      const uint32_t* gw = reinterpret_cast<const uint32_t*>(&gv[j]);
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const float2 a = ptx::unpack2<T>(ow[w]), d = ptx::unpack2<T>(gw[w]);
        sum += a.x * d.x + a.y * d.y;
      }
#pragma unroll
      for (int s = kLanes / 2; s > 0; s /= 2) sum += __shfl_xor_sync(0xffffffff, sum, s);
      if (i >= seq.len_q || !head_ok) continue;
      const int64_t li = seq.lse_index(p, head, i);
      if (c == 0) {
        p.delta[li] = sum;
        const float lse = p.lse[li];
        // exp(sink - lse) is this row's sink probability; 0 when lse is +-inf or the row is empty.
        if (p.sinks && lse > -INFINITY && lse < INFINITY) dsink += __expf(sink - lse) * sum;
      }
      if (p.dq_flags != nullptr) {
        // dq handoff: no key block walks a row that sees no key, so its zero dq is written here.
        int64_t lo, hi;
        mask.key_range(i, i + 1, lo, hi);
        if (lo >= hi && c < D / 8)
          *reinterpret_cast<uint4*>(static_cast<T*>(p.dq.data) + seq.offset(p.dq, true, i, head) +
                                    c * 8) = make_uint4(0, 0, 0, 0);
      } else if (p.dq_atomic) {
        float* acc = p.dq_accum + ((seq.row_q + i) * p.heads_q + head) * D;
        for (int k = c; k < D / 4; k += kLanes)
          reinterpret_cast<float4*>(acc)[k] = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  }
  if (p.dsink_partial == nullptr) return;
  if (c == 0) pair_sum[pair] = dsink;
  __syncthreads();
  const int64_t h = (int64_t)blockIdx.y * kHeads + threadIdx.x;
  if (threadIdx.x < kHeads && h < p.heads_q) {  // the pairs of head h, in a fixed order
    float s = 0.f;
    for (int j = threadIdx.x; j < kPairs; j += kHeads) s += pair_sum[j];
    p.dsink_partial[row_group(p, seq.group0(p), h, m0)] = s;
  }
}

// dsink_h = -(sum of the partials of head h), in a fixed order: bit-identical run to run. Every
// slot holds a partial or, packed, the zero it was cleared to, so the lanes stride over the
// head's slots with no per-sequence lookup (packed batches hold hundreds of sequences).
// (A template only so that every instantiation file may carry a copy.)
template <typename T>
__global__ void __launch_bounds__(32) bwd_dsink_kernel(const __grid_constant__ Params p) {
  const int64_t head = blockIdx.x;
  const float* part = p.dsink_partial + head * p.row_groups;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < p.row_groups; i += 32) s += part[i];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffff, s, o);
  if (threadIdx.x == 0) p.dsink[head] = -s;
}

// dq = scale * dq_accum in the output dtype (atomic dq mode); lanes as in the prep kernel. Block
// (x, y, z): rows [64 x, 64 x + 64) of head y of sequence z, or packed, of the packed rows of all
// sequences at once, [cu_seqlens_q[0], cu_seqlens_q[batch]) (a grid of 64 packed rows per
// block, launch_bwd_dq_convert): a block per sequence and 64 rows of the longest sat idle for
// short sequences beside a long one (4,000 tiny documents beside one of 16k: 53 ms).
template <typename T, int D>
__global__ void __launch_bounds__(kPrepWarps * 32)
    bwd_dq_convert_kernel(const __grid_constant__ Params p) {
  constexpr int kLanes = prep_lanes(D), kRowsPerWarp = 32 / kLanes;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int c = lane % kLanes;
  const int64_t head = blockIdx.y, b = blockIdx.z;
  const bool packed = p.cu_seqlens_q != nullptr;
  int64_t lo = 0, hi = p.seqlen_q;  // the block's rows to convert: i in [lo, hi)
  if (packed) {  // clamped as Sequence clamps them
    const PackedRows r = packed_q(p);
    lo = r.row(0);
    hi = max(r.row((int)p.batch), (int)lo);
  }
  const int64_t row0 = packed ? 0 : b * p.seqlen_q;  // the dq_accum row of row i = 0
  const int64_t m0 = (int64_t)blockIdx.x * kPrepRows;
  for (int r = warp * kRowsPerWarp + lane / kLanes; r < kPrepRows; r += kPrepWarps * kRowsPerWarp) {
    const int64_t i = m0 + r;
    if (i < lo || i >= hi || c >= D / 8) continue;
    const float4* acc = reinterpret_cast<const float4*>(
        p.dq_accum + ((row0 + i) * p.heads_q + head) * D + c * 8);
    const float4 x = acc[0], y = acc[1];
    uint4 v;
    v.x = ptx::pack2<T>(x.x * p.scale, x.y * p.scale);
    v.y = ptx::pack2<T>(x.z * p.scale, x.w * p.scale);
    v.z = ptx::pack2<T>(y.x * p.scale, y.y * p.scale);
    v.w = ptx::pack2<T>(y.z * p.scale, y.w * p.scale);
    const int64_t at = (packed ? 0 : b * p.dq.batch_stride) + i * p.dq.row_stride +
                       head * p.dq.head_stride + c * 8;
    *reinterpret_cast<uint4*>(static_cast<T*>(p.dq.data) + at) = v;
  }
}

}  // namespace sinkattn::cuda::sm80
