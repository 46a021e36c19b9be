// Backward, deterministic by construction (no atomics, fixed reduction order):
//   1. delta_i = dout_i . out_i per (row, head), into the workspace (lse layout);
//   2. dsink_h = -sum_i exp(s_h - lse_i) delta_i, one task per head, rows in order;
//   3. dq: one task per (query block, head) over the key blocks it sees;
//   4. dk, dv: one task per (key block, kv head) over every query head of the group and the
//      query blocks that see it, in order.
// Passes 3 and 4 both recompute S and P (7 tile GEMMs per tile instead of 5), the price of
// needing neither float atomics nor a per-key-block copy of dq.
#include <cmath>

#include "cpu/blocks.h"
#include "cpu/common.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"

namespace sinkattn {
namespace cpu {
namespace {

// Per-thread fp32 tiles of one backward task; dp = head dim padded to the GEMM's column block.
struct BwdTiles {
  float *q, *dout, *k, *kt, *v, *vt, *s, *dp, *acc1, *acc2, *head1, *head2, *lse, *delta, *row_mul;
  BwdTiles(Carver& c, int dpad) {
    q = c.take(size_t(kBlockQ) * dpad);     // scale * q rows
    dout = c.take(size_t(kBlockQ) * dpad);  // dout rows
    k = c.take(size_t(kBlockK) * dpad);
    kt = c.take(size_t(dpad) * kBlockK);
    v = c.take(size_t(kBlockK) * dpad);
    vt = c.take(size_t(dpad) * kBlockK);
    s = c.take(size_t(kBlockQ) * kBlockK);   // scores, then P
    dp = c.take(size_t(kBlockQ) * kBlockK);  // dP = dout V^T, then dS
    acc1 = c.take(size_t(kBlockQ) * dpad);   // dq, or dk
    acc2 = c.take(size_t(kBlockK) * dpad);   // dv
    head1 = c.take(size_t(kBlockK) * dpad);  // one query head's dk, added to acc1 once
    head2 = c.take(size_t(kBlockK) * dpad);  // one query head's dv, added to acc2 once
    lse = c.take(kBlockQ);
    delta = c.take(kBlockQ);
    row_mul = c.take(kBlockQ);
  }
};

struct Ctx {
  const sinkattn_bwd_params& bp;
  const sinkattn_problem& p;
  float* delta;  // workspace, lse layout
  int d, dpad;
};

// Loads scale * q, dout, lse and delta of query rows [i0, i0 + nq) of head h into the tiles.
// lse = -inf (no key, no sink) becomes +inf so that every P of the row is exp(-inf) = 0.
// Padding rows are zero in q and dout, so their S and dP are 0 and they add nothing to dk, dv.
void load_query_side(const Ctx& c, const BwdTiles& t, const Seq& s, int64_t h, int64_t i0, int nq,
                     int nq_pad) {
  const sinkattn_problem& p = c.p;
  load_rows(p.dtype, q_row(p, p.q, s, i0, h), p.q.row_stride, nq, c.d, p.scale, t.q, c.dpad,
            nq_pad);
  load_rows(p.dtype, q_row(p, c.bp.dout, s, i0, h), c.bp.dout.row_stride, nq, c.d, 1.f, t.dout,
            c.dpad, nq_pad);
  const int64_t off = lse_offset(p, s, h) + i0;
  for (int r = 0; r < nq; ++r) {
    const float l = c.bp.lse[off + r];
    t.lse[r] = l == -kInf ? kInf : l;
    t.delta[r] = c.delta[off + r];
  }
}

// Loads key rows [j0, j0 + nk) of kv head hk: k and v row-major and transposed.
void load_key_side(const Ctx& c, const BwdTiles& t, const Seq& s, int64_t hk, int64_t j0, int nk,
                   int nk_pad) {
  const sinkattn_problem& p = c.p;
  load_rows(p.dtype, k_row(p, p.k, s, j0, hk), p.k.row_stride, nk, c.d, 1.f, t.k, c.dpad, nk_pad);
  load_rows(p.dtype, k_row(p, p.v, s, j0, hk), p.v.row_stride, nk, c.d, 1.f, t.v, c.dpad, nk_pad);
  transpose(t.k, c.dpad, nk_pad, c.dpad, t.kt, nk_pad);
  transpose(t.v, c.dpad, nk_pad, c.dpad, t.vt, nk_pad);
}

// P into t.s and dS into t.dp for the loaded query and key tiles.
void tile_grad(const Ctx& c, const BwdTiles& t, const Mask& mask, int64_t i0, int nq, int nq_pad,
               int64_t j0, int nk, int nk_pad) {
  gemm(nq_pad, nk_pad, c.dpad, t.q, c.dpad, 1, t.kt, nk_pad, t.s, kBlockK, false);
  if (nk != nk_pad || !mask.full(i0, nq, j0, nk)) mask.apply(t.s, kBlockK, i0, nq, j0, nk, nk_pad);
  gemm(nq_pad, nk_pad, c.dpad, t.dout, c.dpad, 1, t.vt, nk_pad, t.dp, kBlockK, false);
  softmax_grad(t.s, t.dp, kBlockK, nq, nk_pad, t.lse, t.delta);
}

void delta_block(const Ctx& c, const Block& blk, int64_t h) {
  const sinkattn_problem& p = c.p;
  const BwdTiles t = thread_tiles<BwdTiles>(c.dpad);
  const Seq s = seq_at(p, blk.seq);
  const int nq = static_cast<int>(blk.rows);
  load_rows(p.dtype, q_row(p, c.bp.out, s, blk.start, h), c.bp.out.row_stride, nq, c.d, 1.f, t.q,
            c.dpad, nq);
  load_rows(p.dtype, q_row(p, c.bp.dout, s, blk.start, h), c.bp.dout.row_stride, nq, c.d, 1.f,
            t.dout, c.dpad, nq);
  dot_rows(t.q, t.dout, c.dpad, nq, c.d, c.delta + lse_offset(p, s, h) + blk.start);
}

void dsink_head(const Ctx& c, int64_t h) {
  const sinkattn_problem& p = c.p;
  const double sink = p.sinks[h];
  double sum = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const Seq s = seq_at(p, b);
    const int64_t off = lse_offset(p, s, h);
    for (int64_t i = 0; i < s.sq; ++i) {
      const float l = c.bp.lse[off + i];
      if (std::isfinite(l)) sum += std::exp(sink - l) * c.delta[off + i];
    }
  }
  c.bp.dsink[h] = static_cast<float>(-sum);
}

void dq_block(const Ctx& c, const Block& blk, int64_t h) {
  const sinkattn_problem& p = c.p;
  const BwdTiles t = thread_tiles<BwdTiles>(c.dpad);
  const Seq s = seq_at(p, blk.seq);
  const Mask mask(p, s);
  const int64_t hk = h / (p.heads_q / p.heads_kv);
  const int64_t i0 = blk.start;
  const int nq = static_cast<int>(blk.rows), nq_pad = static_cast<int>(round_up(nq, kRowAlign));

  load_query_side(c, t, s, h, i0, nq, nq_pad);
  std::fill(t.acc1, t.acc1 + size_t(nq_pad) * c.dpad, 0.f);
  for (int64_t j0 = blk.other0; j0 < blk.other1; j0 += kBlockK) {
    const int nk = static_cast<int>(std::min<int64_t>(kBlockK, blk.other1 - j0));
    const int nk_pad = static_cast<int>(round_up(nk, kColAlign));
    load_key_side(c, t, s, hk, j0, nk, nk_pad);
    tile_grad(c, t, mask, i0, nq, nq_pad, j0, nk, nk_pad);
    gemm(nq_pad, c.dpad, nk_pad, t.dp, kBlockK, 1, t.k, c.dpad, t.acc1, c.dpad, true);  // dS K
  }
  std::fill(t.row_mul, t.row_mul + nq, p.scale);
  store_rows(p.dtype, t.acc1, c.dpad, nq, c.d, t.row_mul, q_row(p, c.bp.dq, s, i0, h),
             c.bp.dq.row_stride);
}

void dkdv_block(const Ctx& c, const Block& blk, int64_t hk) {
  const sinkattn_problem& p = c.p;
  const BwdTiles t = thread_tiles<BwdTiles>(c.dpad);
  const Seq s = seq_at(p, blk.seq);
  const Mask mask(p, s);
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t j0 = blk.start;
  const int nk = static_cast<int>(blk.rows), nk_pad = static_cast<int>(round_up(nk, kColAlign));

  load_key_side(c, t, s, hk, j0, nk, nk_pad);
  std::fill(t.acc1, t.acc1 + size_t(nk_pad) * c.dpad, 0.f);
  std::fill(t.acc2, t.acc2 + size_t(nk_pad) * c.dpad, 0.f);
  // Each query head's sum goes to its own tile first and joins the group's once: a two-level
  // sum keeps the fp32 rounding of wide GQA groups (64 heads per kv head) near per-head size.
  const size_t tile = size_t(nk_pad) * c.dpad;
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    std::fill(t.head1, t.head1 + tile, 0.f);
    std::fill(t.head2, t.head2 + tile, 0.f);
    for (int64_t i0 = blk.other0; i0 < blk.other1; i0 += kBlockQ) {
      const int nq = static_cast<int>(std::min<int64_t>(kBlockQ, blk.other1 - i0));
      const int nq_pad = static_cast<int>(round_up(nq, kRowAlign));
      load_query_side(c, t, s, h, i0, nq, nq_pad);
      tile_grad(c, t, mask, i0, nq, nq_pad, j0, nk, nk_pad);
      // dV += P^T dO and dK += dS^T (scale q), reading P and dS transposed in place.
      gemm(nk_pad, c.dpad, nq_pad, t.s, 1, kBlockK, t.dout, c.dpad, t.head2, c.dpad, true);
      gemm(nk_pad, c.dpad, nq_pad, t.dp, 1, kBlockK, t.q, c.dpad, t.head1, c.dpad, true);
    }
    for (size_t e = 0; e < tile; ++e) {
      t.acc1[e] += t.head1[e];
      t.acc2[e] += t.head2[e];
    }
  }
  store_rows(p.dtype, t.acc1, c.dpad, nk, c.d, nullptr, k_row(p, c.bp.dk, s, j0, hk),
             c.bp.dk.row_stride);
  store_rows(p.dtype, t.acc2, c.dpad, nk, c.d, nullptr, k_row(p, c.bp.dv, s, j0, hk),
             c.bp.dv.row_stride);
}

size_t delta_bytes(const sinkattn_problem& p) {
  return static_cast<size_t>(round_up(lse_elements(p) * static_cast<int64_t>(sizeof(float)), 256));
}

}  // namespace

size_t bwd_workspace_size(const sinkattn_bwd_params& bp) { return delta_bytes(bp.problem); }

void bwd(const sinkattn_bwd_params& bp) {
  const sinkattn_problem& p = bp.problem;
  if (bp.workspace_size < delta_bytes(p) || (delta_bytes(p) && !bp.workspace))
    throw Error(SINKATTN_ERROR_INTERNAL, "sinkattn cpu bwd: workspace smaller than requested");
  const Ctx c{bp, p, static_cast<float*>(bp.workspace), p.head_dim,
              static_cast<int>(round_up(p.head_dim, kColAlign))};
  const int64_t hq = p.heads_q, hkv = p.heads_kv;
  const double d = p.head_dim;

  double q_pairs = 0, k_pairs = 0;
  const std::vector<Block> qblocks = make_blocks(p, /*by_key=*/false, &q_pairs);
  const std::vector<Block> kblocks = make_blocks(p, /*by_key=*/true, &k_pairs);
  const int64_t nqt = static_cast<int64_t>(qblocks.size()) * hq;
  const int64_t nkt = static_cast<int64_t>(kblocks.size()) * hkv;
  const double rows = static_cast<double>(lse_elements(p));

  parallel_for(nqt, 2.0 * rows * d, [&](int64_t t) { delta_block(c, qblocks[t / hq], t % hq); });
  if (bp.dsink) parallel_for(hq, 20.0 * rows, [&](int64_t h) { dsink_head(c, h); });
  parallel_for(nqt, 6.0 * q_pairs * hq * d,
               [&](int64_t t) { dq_block(c, qblocks[t / hq], t % hq); });
  parallel_for(nkt, 8.0 * k_pairs * hq * d,
               [&](int64_t t) { dkdv_block(c, kblocks[t / hkv], t % hkv); });
  write_outside_rows(p, bp.dq, hq, /*keys=*/false);
  write_outside_rows(p, bp.dk, hkv, /*keys=*/true);
  write_outside_rows(p, bp.dv, hkv, /*keys=*/true);
}

}  // namespace cpu
}  // namespace sinkattn
