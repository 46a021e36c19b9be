// Plain fp64 reference for one (sequence, query head): written from the formulas in
// include/sinkattn/sinkattn.h, sharing no mask or softmax code with any backend.
// Matrices are row-major std::vector<double>: q (sq x d), k and v (sk x d).
#pragma once

#include <cmath>
#include <limits>
#include <vector>

namespace sinkattn_ref {

struct Head {
  long sq = 0, sk = 0, d = 0;
  double scale = 1.0;
  bool has_sink = false;
  double sink = 0.0;
  bool causal = false;
  long left = -1, right = -1;  // -1 = unbounded
  long zigzag_rank = 0, zigzag_world = 0;  // fused zigzag CP; world 0 = off
};

// Key position of query i: bottom-right aligned, or for fused zigzag CP the global position of
// its row: the first half of the rows is chunk `rank` of 2W, the second half chunk 2W-1-rank.
inline long position(const Head& h, long i) {
  if (h.zigzag_world == 0) return i + h.sk - h.sq;
  const long chunk_len = h.sq / 2;
  const long chunk = i / chunk_len == 0 ? h.zigzag_rank : 2 * h.zigzag_world - 1 - h.zigzag_rank;
  return chunk * chunk_len + i % chunk_len;
}

// Key j is visible from query i when it lies inside the window around i's position.
inline bool visible(const Head& h, long i, long j) {
  long pos = position(h, i);
  long right = h.causal ? 0 : h.right;
  if (h.left >= 0 && j < pos - h.left) return false;
  if (right >= 0 && j > pos + right) return false;
  return j >= 0 && j < h.sk;
}

struct Forward {
  std::vector<double> out;  // sq x d
  std::vector<double> lse;  // sq
  std::vector<double> p;    // sq x sk probabilities (0 where masked), kept for the backward
};

inline Forward forward(const Head& h, const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& v) {
  Forward f;
  f.out.assign(h.sq * h.d, 0.0);
  f.lse.assign(h.sq, 0.0);
  f.p.assign(h.sq * h.sk, 0.0);
  for (long i = 0; i < h.sq; ++i) {
    std::vector<double> s(h.sk, 0.0);
    double m = h.has_sink ? h.sink : -std::numeric_limits<double>::infinity();
    for (long j = 0; j < h.sk; ++j) {
      if (!visible(h, i, j)) continue;
      double dot = 0.0;
      for (long c = 0; c < h.d; ++c) dot += q[i * h.d + c] * k[j * h.d + c];
      s[j] = h.scale * dot;
      m = std::max(m, s[j]);
    }
    if (m == -std::numeric_limits<double>::infinity()) {  // no key and no sink
      f.lse[i] = m;
      continue;
    }
    double denom = h.has_sink ? std::exp(h.sink - m) : 0.0;
    for (long j = 0; j < h.sk; ++j)
      if (visible(h, i, j)) denom += std::exp(s[j] - m);
    f.lse[i] = m + std::log(denom);
    for (long j = 0; j < h.sk; ++j) {
      if (!visible(h, i, j)) continue;
      double pij = std::exp(s[j] - f.lse[i]);
      f.p[i * h.sk + j] = pij;
      for (long c = 0; c < h.d; ++c) f.out[i * h.d + c] += pij * v[j * h.d + c];
    }
  }
  return f;
}

struct Backward {
  std::vector<double> dq, dk, dv;  // shapes of q, k, v
  double dsink = 0.0;
};

// Gradients of sum(dout * out). dP_ij = dout_i . v_j; dS_ij = P_ij (dP_ij - delta_i) with
// delta_i = dout_i . out_i (the sink carries no value, so it enters only through delta).
inline Backward backward(const Head& h, const std::vector<double>& q, const std::vector<double>& k,
                         const std::vector<double>& v, const Forward& f,
                         const std::vector<double>& dout) {
  Backward b;
  b.dq.assign(h.sq * h.d, 0.0);
  b.dk.assign(h.sk * h.d, 0.0);
  b.dv.assign(h.sk * h.d, 0.0);
  for (long i = 0; i < h.sq; ++i) {
    double delta = 0.0;
    for (long c = 0; c < h.d; ++c) delta += dout[i * h.d + c] * f.out[i * h.d + c];
    if (h.has_sink && std::isfinite(f.lse[i])) b.dsink -= std::exp(h.sink - f.lse[i]) * delta;
    for (long j = 0; j < h.sk; ++j) {
      double pij = f.p[i * h.sk + j];
      if (pij == 0.0) continue;
      double dp = 0.0;
      for (long c = 0; c < h.d; ++c) dp += dout[i * h.d + c] * v[j * h.d + c];
      double ds = pij * (dp - delta) * h.scale;
      for (long c = 0; c < h.d; ++c) {
        b.dv[j * h.d + c] += pij * dout[i * h.d + c];
        b.dq[i * h.d + c] += ds * k[j * h.d + c];
        b.dk[j * h.d + c] += ds * q[i * h.d + c];
      }
    }
  }
  return b;
}

}  // namespace sinkattn_ref
