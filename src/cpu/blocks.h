// The row blocks a pass works on, shared by the forward and backward passes: every sequence's
// rows cut into fixed-size blocks, with the span of the other side that the mask lets them see.
#pragma once

#include <algorithm>
#include <vector>

#include "cpu/common.h"

namespace sinkattn {
namespace cpu {

struct Block {
  int64_t seq;     // sequence index
  int64_t start;   // first row of the block (query rows or key rows, per pass)
  int64_t rows;    // rows in the block (<= block size)
  int64_t other0;  // first visible row on the other side
  int64_t other1;  // one past the last visible row on the other side (<= other0: none)
};

// Query blocks of kBlockQ rows, each with the keys [other0, other1) its rows can see; or, with
// by_key, key blocks of kBlockK rows with the query rows that see them. Costlier blocks come first
// so dynamic scheduling ends evenly. Also returns the visible (row, other) pairs, roughly.
inline std::vector<Block> make_blocks(const sinkattn_problem& p, bool by_key, double* pairs) {
  std::vector<Block> out;
  *pairs = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    Seq s = seq_at(p, b);
    Mask mask(p, s);
    int64_t n = by_key ? s.sk : s.sq, bs = by_key ? kBlockK : kBlockQ;
    for (int64_t start = 0, rows; start < n; start += rows) {
      rows = std::min(bs, n - start);
      // Fused zigzag: a query block never straddles the two chunks, whose key ranges may be
      // far apart under a window (key blocks are seen by a row interval either way).
      if (!by_key && start < mask.split && mask.split < start + rows) rows = mask.split - start;
      Block blk{b, start, rows, 0, 0};
      if (by_key) {
        blk.other0 = mask.first_row(start);
        blk.other1 = mask.last_row(start + blk.rows) + 1;
      } else {
        blk.other0 = mask.lo(start);
        blk.other1 = mask.hi(start + blk.rows - 1) + 1;
      }
      blk.other1 = std::max(blk.other1, blk.other0);
      *pairs += static_cast<double>(blk.rows) * static_cast<double>(blk.other1 - blk.other0);
      out.push_back(blk);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Block& x, const Block& y) {
    return x.other1 - x.other0 > y.other1 - y.other0;
  });
  return out;
}

}  // namespace cpu
}  // namespace sinkattn
