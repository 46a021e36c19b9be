// Host side of the Hopper path: TMA tensor maps over sinkattn tensors.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <string>

#include "sinkattn/sinkattn.h"

namespace sinkattn::cuda::sm90 {

// Rows, heads and batch entries of a q-like or k-like tensor as TMA sees it: packed (varlen)
// tensors are one batch entry of `rows` tokens.
struct TensorShape {
  int64_t dim, rows, heads, batch;  // head dim (a multiple of 64), tokens, heads, batch entries
};

// The q-like and k-like tensors of a problem (sinkattn_problem or the kernels' Params: the same
// field names) as TMA sees them, for head dim `dim`.
template <typename P>
TensorShape q_shape(const P& p, int64_t dim) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  return {dim, varlen ? p.total_q : p.seqlen_q, p.heads_q, varlen ? 1 : p.batch};
}
template <typename P>
TensorShape kv_shape(const P& p, int64_t dim) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  return {dim, varlen ? p.total_k : p.seqlen_k, p.heads_kv, varlen ? 1 : p.batch};
}

// Empty when TMA can address the tensor, else why not (a stride TMA cannot encode).
std::string tma_unsupported(const char* name, const sinkattn_tensor& t, const TensorShape& s);

// A 4-d map (head dim, rows, heads, batch) of 16-bit elements with boxes of 64 head-dim
// elements x box_rows rows x box_heads heads (laid out [heads][rows][64]), 128-byte swizzled;
// reads outside the tensor (rows before the first, past the last) return zeros.
CUtensorMap make_tile_map(const sinkattn_tensor& t, const TensorShape& s, int box_rows,
                          int box_heads = 1);

// A 3-d map (head dim, heads, rows) over a contiguous fp32 (rows, heads, dim) accumulator with
// boxes of 32 floats x 1 head x box_rows rows, 128-byte swizzled (for TMA reductions).
CUtensorMap make_accum_map(float* data, int64_t rows, int64_t heads, int dim, int box_rows);

}  // namespace sinkattn::cuda::sm90
