// The same math as reference.h done plainly in the kernels' precision: inputs already rounded to
// the dtype, fp32 scores and sums, P (and dS) rounded to the dtype before each matmul, outputs
// rounded to the dtype. Its error against fp64 sets the scale of the tolerance for a kernel.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "half.h"
#include "reference.h"

namespace sinkattn_test {

struct LowpForward {
  std::vector<float> out;  // sq x d, rounded to the dtype
  std::vector<float> lse;  // sq
};

inline float lowp_score(const sinkattn_ref::Head& h, const std::vector<float>& q,
                        const std::vector<float>& k, long i, long j) {
  float dot = 0.0f;
  for (long c = 0; c < h.d; ++c) dot += q[i * h.d + c] * k[j * h.d + c];
  return static_cast<float>(h.scale) * dot;
}

inline LowpForward lowp_forward(const sinkattn_ref::Head& h, sinkattn_dtype t,
                                const std::vector<float>& q, const std::vector<float>& k,
                                const std::vector<float>& v) {
  const float ninf = -std::numeric_limits<float>::infinity();
  LowpForward f;
  f.out.assign(h.sq * h.d, 0.0f);
  f.lse.assign(h.sq, ninf);
  std::vector<float> s(h.sk), acc(h.d);
  for (long i = 0; i < h.sq; ++i) {
    float m = h.has_sink ? static_cast<float>(h.sink) : ninf;
    for (long j = 0; j < h.sk; ++j)
      if (sinkattn_ref::visible(h, i, j)) s[j] = lowp_score(h, q, k, i, j), m = std::max(m, s[j]);
    if (m == ninf) continue;
    float l = h.has_sink ? std::exp(static_cast<float>(h.sink) - m) : 0.0f;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (long j = 0; j < h.sk; ++j) {
      if (!sinkattn_ref::visible(h, i, j)) continue;
      float p = std::exp(s[j] - m);
      l += p;
      float pr = round_to(t, p);
      for (long c = 0; c < h.d; ++c) acc[c] += pr * v[j * h.d + c];
    }
    for (long c = 0; c < h.d; ++c) f.out[i * h.d + c] = round_to(t, acc[c] / l);
    f.lse[i] = m + std::log(l);
  }
  return f;
}

struct LowpBackward {
  std::vector<float> dq, dk, dv;  // unrounded fp32 accumulators; the caller rounds once summed
  float dsink = 0.0f;
};

// Accumulates into b (dk, dv sum over the query heads of a group before rounding).
inline void lowp_backward(const sinkattn_ref::Head& h, sinkattn_dtype t,
                          const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v, const LowpForward& f,
                          const std::vector<float>& dout, LowpBackward& b) {
  b.dq.assign(h.sq * h.d, 0.0f);
  b.dk.resize(h.sk * h.d, 0.0f);
  b.dv.resize(h.sk * h.d, 0.0f);
  for (long i = 0; i < h.sq; ++i) {
    if (!std::isfinite(f.lse[i])) continue;  // a row with no key and no sink
    float delta = 0.0f;
    for (long c = 0; c < h.d; ++c) delta += dout[i * h.d + c] * f.out[i * h.d + c];
    if (h.has_sink) b.dsink -= std::exp(static_cast<float>(h.sink) - f.lse[i]) * delta;
    for (long j = 0; j < h.sk; ++j) {
      if (!sinkattn_ref::visible(h, i, j)) continue;
      float p = std::exp(lowp_score(h, q, k, i, j) - f.lse[i]);
      float dp = 0.0f;
      for (long c = 0; c < h.d; ++c) dp += dout[i * h.d + c] * v[j * h.d + c];
      float pr = round_to(t, p);
      float ds = round_to(t, p * (dp - delta)) * static_cast<float>(h.scale);
      for (long c = 0; c < h.d; ++c) {
        b.dv[j * h.d + c] += pr * dout[i * h.d + c];
        b.dq[i * h.d + c] += ds * k[j * h.d + c];
        b.dk[j * h.d + c] += ds * q[i * h.d + c];
      }
    }
  }
}

}  // namespace sinkattn_test
