// The query rows of a portable forward or dq block (and of the Hopper dq kernel's): one query
// head and sequence, rows [m0, m0 + BM) in grid.h's launch order with the last row blocks first
// (under a causal mask they see the most keys), and the key blocks [n_first, n_end) those rows
// see. The grid is grid.h make_query_grid's; of() is warp-wide (its slot search).
#pragma once

#include <cstdint>

#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"

namespace sinkattn::cuda::sm80 {

struct QueryBlock {
  int64_t head, head_kv;
  Sequence seq;
  Mask mask;
  int64_t m0;               // first query row; m0 >= seq.len_q: the block has none
  int64_t n_first, n_end;   // key blocks of BN keys

  // I: the index type of the key-block arithmetic (walked_key_blocks); int where the caller
  // walks the blocks in int anyway (the Hopper dq kernel).
  template <int BM, int BN, class I = int64_t>
  __device__ __forceinline__ static QueryBlock of(const Params& p) {
    const int64_t blocks = (p.seqlen_q + BM - 1) / BM;
    const GridPos at = query_grid_pos(p, BM);
    const Sequence seq(p, at.b);
    const Mask mask = Mask::of(p, seq);
    const int64_t m0 = (blocks - 1 - at.block) * BM;
    const KeyBlocks<I> walk = walked_key_blocks<I>(mask, m0, BM, BN);
    return {at.head, at.head / p.group, seq, mask, m0, walk.first, walk.end};
  }
  __device__ __forceinline__ bool empty() const { return m0 >= seq.len_q; }
};

}  // namespace sinkattn::cuda::sm80
