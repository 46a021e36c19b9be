// Gradients against central finite differences of the loss L = sum(dout * out):
//  - the fp64 reference's analytic backward against differences of its own forward, and
//  - the library's backward (dq, dk, dv, dsink) against differences of the library's forward,
//    with fp32 inputs, so the check covers the kernels' gradients themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "attention_case.h"
#include "reference.h"
#include "references.h"

namespace sinkattn_test {
namespace {

// ---- the reference against itself ------------------------------------------------------------

double ref_loss(const sinkattn_ref::Head& h, const std::vector<double>& q,
                const std::vector<double>& k, const std::vector<double>& v,
                const std::vector<double>& dout) {
  auto f = sinkattn_ref::forward(h, q, k, v);
  double l = 0.0;
  for (size_t i = 0; i < f.out.size(); ++i) l += dout[i] * f.out[i];
  return l;
}

void check_reference_head(sinkattn_ref::Head h) {
  SCOPED_TRACE(replay_hint());
  std::mt19937_64 rng(test_seed());
  std::normal_distribution<double> normal;
  auto draw = [&](long n) {
    std::vector<double> x(n);
    for (double& e : x) e = normal(rng);
    return x;
  };
  auto q = draw(h.sq * h.d), k = draw(h.sk * h.d), v = draw(h.sk * h.d), dout = draw(h.sq * h.d);
  auto f = sinkattn_ref::forward(h, q, k, v);
  auto b = sinkattn_ref::backward(h, q, k, v, f, dout);
  const double step = 1e-6, tol = 1e-6;  // truncation ~step^2, rounding ~1e-16 * |L| / step
  auto check = [&](const char* name, std::vector<double>& x, const std::vector<double>& g) {
    for (size_t i = 0; i < x.size(); ++i) {
      double x0 = x[i];
      x[i] = x0 + step;
      double lp = ref_loss(h, q, k, v, dout);
      x[i] = x0 - step;
      double lm = ref_loss(h, q, k, v, dout);
      x[i] = x0;
      EXPECT_NEAR(g[i], (lp - lm) / (2 * step), tol) << name << "[" << i << "]";
    }
  };
  check("dq", q, b.dq);
  check("dk", k, b.dk);
  check("dv", v, b.dv);
  if (h.has_sink) {
    double s0 = h.sink;
    h.sink = s0 + step;
    double lp = ref_loss(h, q, k, v, dout);
    h.sink = s0 - step;
    double lm = ref_loss(h, q, k, v, dout);
    EXPECT_NEAR(b.dsink, (lp - lm) / (2 * step), tol) << "dsink";
  }
}

sinkattn_ref::Head ref_head(long sq, long sk, bool sink, bool causal, long left, long right) {
  sinkattn_ref::Head h;
  h.sq = sq, h.sk = sk, h.d = 5, h.scale = 0.7;
  h.has_sink = sink, h.sink = 0.3, h.causal = causal, h.left = left, h.right = right;
  return h;
}

TEST(ReferenceFiniteDiff, FullWithSink) { check_reference_head(ref_head(4, 6, true, false, -1, -1)); }
TEST(ReferenceFiniteDiff, CausalWindowWithSink) { check_reference_head(ref_head(6, 6, true, true, 2, -1)); }
TEST(ReferenceFiniteDiff, BandNoSink) { check_reference_head(ref_head(5, 7, false, false, 1, 2)); }
TEST(ReferenceFiniteDiff, EmptyRowsWithSink) { check_reference_head(ref_head(6, 3, true, true, -1, -1)); }

// ---- the library -----------------------------------------------------------------------------

// L = sum(dout * out) in fp64 from the library's fp32 forward.
double library_loss(Attention& a) {
  EXPECT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
  Result r = library_result(a);
  double l = 0.0;
  for (const Seq& s : a.seqs())
    for (int64_t h = 0; h < a.c.hq; ++h)
      for (int64_t i = 0; i < s.nq; ++i)
        for (int64_t c = 0; c < a.c.d; ++c)
          l += a.dout.get(s.tb, s.q0 + i, h, c) * r.out[((s.dq0 + i) * a.c.hq + h) * a.c.d + c];
  return l;
}

// Fourth-order central difference with a power-of-two step on inputs that sit on a 2^-10 grid,
// so every x +- k * step is exact in fp32. The loss carries fp32 rounding (~1e-6 absolute here),
// which dominates: measured |library - difference| stays below ~7e-5 with this step (it grows as
// the step shrinks, so it is noise, not truncation); a wrong gradient is off by far more.
constexpr double kStep = 1.0 / 32;
constexpr double kRtol = 5e-4, kAtol = 5e-5;

double difference(const std::function<void(double)>& shift, Attention& a) {
  double l[4];
  const double k[4] = {-2, -1, 1, 2};
  for (int i = 0; i < 4; ++i) {
    shift(k[i] * kStep);
    l[i] = library_loss(a);
    shift(-k[i] * kStep);
  }
  return (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * kStep);
}

void snap_to_grid(Tensor& t) {
  for (int64_t b = 0; b < t.batch; ++b)
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t h = 0; h < t.heads; ++h)
        for (int64_t c = 0; c < t.dim; ++c)
          t.set(b, r, h, c, std::ldexp(std::nearbyint(std::ldexp(t.get(b, r, h, c), 10)), -10));
}

void expect_gradient(const char* name, const std::vector<double>& got,
                     const std::vector<double>& fd) {
  double scale = 0.0;
  for (double g : fd) scale = std::max(scale, std::fabs(g));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], fd[i], kRtol * scale + kAtol) << name << "[" << i << "]";
}

void check_library_case(const Case& c) {
  SCOPED_TRACE(replay_hint());
  ASSERT_EQ(c.dtype, SINKATTN_FLOAT32);
  Attention a(c, Device::kCpu, test_seed());
  for (Tensor* t : {&a.q, &a.k, &a.v}) snap_to_grid(*t);
  for (size_t h = 0; h < a.sinks.size(); ++h)
    a.sinks.host()[h] = std::ldexp(std::nearbyint(std::ldexp(a.sinks.host()[h], 10)), -10);
  ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(a.backward(), SINKATTN_OK) << sinkattn_last_error();
  Result grad = library_result(a);

  // Differences of every input element, in the dense order of Result.
  auto tensor_fd = [&](Tensor& t, int64_t heads, bool query_rows) {
    std::vector<double> fd(query_rows ? grad.dq.size() : grad.dk.size());
    for (const Seq& s : a.seqs())
      for (int64_t i = 0; i < (query_rows ? s.nq : s.nk); ++i)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t x = 0; x < c.d; ++x) {
            int64_t row = (query_rows ? s.q0 : s.k0) + i;
            size_t at = (((query_rows ? s.dq0 : s.dk0) + i) * heads + h) * c.d + x;
            fd[at] = difference(
                [&](double dx) { t.set(s.tb, row, h, x, static_cast<float>(t.get(s.tb, row, h, x) + dx)); },
                a);
          }
    return fd;
  };
  expect_gradient("dq", grad.dq, tensor_fd(a.q, c.hq, true));
  expect_gradient("dk", grad.dk, tensor_fd(a.k, c.hkv, false));
  expect_gradient("dv", grad.dv, tensor_fd(a.v, c.hkv, false));
  if (c.sinks) {
    std::vector<double> fd(c.hq);
    for (int64_t h = 0; h < c.hq; ++h)
      fd[h] = difference([&](double dx) { a.sinks.host()[h] += static_cast<float>(dx); }, a);
    expect_gradient("dsink", grad.dsink, fd);
  }
}

constexpr sinkattn_dtype F32 = SINKATTN_FLOAT32;

TEST(LibraryFiniteDiff, BandWithSink) {
  check_library_case(Case::fixed(F32, 1, 5, 7, 2, 1, 32).with_window(3, 1));
}
TEST(LibraryFiniteDiff, CausalEmptyRowsWithSink) {
  check_library_case(Case::fixed(F32, 1, 6, 4, 2, 1, 32).with_causal());
}
TEST(LibraryFiniteDiff, VarlenGqaNoSink) {
  check_library_case(Case::varlen(F32, {{3, 5}, {0, 2}, {4, 2}}, 4, 2, 32).with_causal().without_sinks());
}
TEST(LibraryFiniteDiff, StridedWithSink) {
  check_library_case(Case::fixed(F32, 2, 3, 4, 2, 2, 32)
                         .with_layout(Layout::kHeadMajor, Layout::kPadded)
                         .with_window(-1, 1));
}

}  // namespace
}  // namespace sinkattn_test
