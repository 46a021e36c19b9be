// Forward: one task per (query block, query head). Each task streams the key blocks its rows can
// see through an online softmax in fp32 tiles; nothing of size Sq x Sk is ever formed.
#include <cmath>

#include "cpu/blocks.h"
#include "cpu/common.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"

namespace sinkattn {
namespace cpu {
namespace {

// Per-thread fp32 tiles of one forward task; dp = head dim padded to the GEMM's column block.
struct FwdTiles {
  float *q, *k, *kt, *v, *s, *o, *m, *l, *inv;
  FwdTiles(Carver& c, int dp) {
    q = c.take(size_t(kBlockQ) * dp);   // scale * q rows
    k = c.take(size_t(kBlockK) * dp);   // key rows
    kt = c.take(size_t(dp) * kBlockK);  // keys transposed, for S = Q K^T
    v = c.take(size_t(kBlockK) * dp);
    s = c.take(size_t(kBlockQ) * kBlockK);  // scores, then probabilities
    o = c.take(size_t(kBlockQ) * dp);       // unnormalised output
    m = c.take(kBlockQ);                    // running max per row
    l = c.take(kBlockQ);                    // running denominator per row
    inv = c.take(kBlockQ);                  // 1 / l
  }
};

void fwd_block(const sinkattn_fwd_params& fp, const Block& blk, int64_t h, int dp) {
  const sinkattn_problem& p = fp.problem;
  const int d = p.head_dim;
  const FwdTiles t = thread_tiles<FwdTiles>(dp);

  const Seq s = seq_at(p, blk.seq);
  const Mask mask(p, s);
  const int64_t hk = h / (p.heads_q / p.heads_kv);
  const int nq = static_cast<int>(blk.rows), nq_pad = static_cast<int>(round_up(nq, kRowAlign));
  const int64_t i0 = blk.start;

  load_rows(p.dtype, q_row(p, p.q, s, i0, h), p.q.row_stride, nq, d, p.scale, t.q, dp, nq_pad);
  // The sink joins the denominator once, as if it were a key with logit s_h and value 0.
  const float m0 = p.sinks ? p.sinks[h] : -kInf;
  for (int r = 0; r < nq_pad; ++r) {
    t.m[r] = m0;
    t.l[r] = m0 == -kInf ? 0.f : 1.f;
  }
  std::fill(t.o, t.o + size_t(nq_pad) * dp, 0.f);

  for (int64_t j0 = blk.other0; j0 < blk.other1; j0 += kBlockK) {
    const int nk = static_cast<int>(std::min<int64_t>(kBlockK, blk.other1 - j0));
    const int nk_pad = static_cast<int>(round_up(nk, kColAlign));
    load_rows(p.dtype, k_row(p, p.k, s, j0, hk), p.k.row_stride, nk, d, 1.f, t.k, dp, nk_pad);
    load_rows(p.dtype, k_row(p, p.v, s, j0, hk), p.v.row_stride, nk, d, 1.f, t.v, dp, nk_pad);
    transpose(t.k, dp, nk_pad, dp, t.kt, nk_pad);
    gemm(nq_pad, nk_pad, dp, t.q, dp, 1, t.kt, nk_pad, t.s, kBlockK, false);
    if (nk != nk_pad || !mask.full(i0, nq, j0, nk))
      mask.apply(t.s, kBlockK, i0, nq, j0, nk, nk_pad);
    // Padding rows keep their raw scores: zero rows of q give S = 0, so P V stays finite there.
    softmax_step(t.s, kBlockK, nq, nk_pad, t.m, t.l, t.o, dp, dp);
    gemm(nq_pad, dp, nk_pad, t.s, kBlockK, 1, t.v, dp, t.o, dp, true);
  }

  // l == 0 only for a row with no visible key and no sink: out 0, lse -inf.
  for (int r = 0; r < nq; ++r) t.inv[r] = t.l[r] > 0.f ? 1.f / t.l[r] : 0.f;
  store_rows(p.dtype, t.o, dp, nq, d, t.inv, q_row(p, fp.out, s, i0, h), fp.out.row_stride);
  if (fp.lse) {
    float* lse = fp.lse + lse_offset(p, s, h) + i0;
    for (int r = 0; r < nq; ++r) lse[r] = t.l[r] > 0.f ? t.m[r] + std::log(t.l[r]) : -kInf;
  }
}

}  // namespace

size_t fwd_workspace_size(const sinkattn_fwd_params&) { return 0; }

void fwd(const sinkattn_fwd_params& fp) {
  const sinkattn_problem& p = fp.problem;
  const int dp = static_cast<int>(round_up(p.head_dim, kColAlign));
  double pairs = 0;
  const std::vector<Block> blocks = make_blocks(p, /*by_key=*/false, &pairs);
  const int64_t hq = p.heads_q;
  // Task = block * Hq + head: the heads of one block run next to each other and share K/V in cache.
  parallel_for(static_cast<int64_t>(blocks.size()) * hq, 4.0 * pairs * hq * p.head_dim,
               [&](int64_t task) { fwd_block(fp, blocks[task / hq], task % hq, dp); });
  write_outside_rows(p, fp.out, hq, /*keys=*/false, fp.lse);
}

}  // namespace cpu
}  // namespace sinkattn
