#include "compare.h"

#include <cmath>
#include <sstream>

#include "half.h"

namespace sinkattn_test {

namespace {
// fp32 results: a fixed relative bound. The absolute floor covers results that are exactly 0 by
// cancellation (dS = P (dP - delta) with one key): the test inputs are O(1), so fp32 rounding
// leaves residues of O(1e-7) there.
constexpr double kFp32Rtol = 1e-5;
constexpr double kFp32Atol = 1e-5;

double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double v : x)
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  return m;
}

// Max |a - ref| over the elements where ref is finite.
double max_err(const std::vector<double>& a, const std::vector<double>& ref, size_t* at) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(ref[i])) continue;
    double e = std::fabs(a[i] - ref[i]);
    if (!(e <= m)) m = e, *at = i;  // NaN counts as the largest error
  }
  return m;
}

// 16-bit results: twice the same-precision error, plus one unit roundoff of the dtype at the
// tensor's scale (the output's own rounding) and the fp32 floor.
Tolerance value_tolerance(sinkattn_dtype t) {
  if (t == SINKATTN_FLOAT32) return {kFp32Rtol, kFp32Atol, false};
  return {unit_roundoff(t), kFp32Atol, true};
}
}  // namespace

::testing::AssertionResult close_to_reference(const std::string& what,
                                              const std::vector<double>& got,
                                              const std::vector<double>& ref,
                                              const std::vector<double>* lowp, Tolerance tol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs " << ref.size();
  for (size_t i = 0; i < got.size(); ++i) {
    bool ok = std::isfinite(ref[i]) ? std::isfinite(got[i]) : got[i] == ref[i];
    if (!ok)
      return ::testing::AssertionFailure()
             << what << "[" << i << "] = " << got[i] << " but the fp64 reference is " << ref[i]
             << " (non-finite values must match)";
  }
  size_t at = 0, lowp_at = 0;
  double err = max_err(got, ref, &at);
  double lowp_err = lowp ? max_err(*lowp, ref, &lowp_at) : 0.0;
  double bound = tol.rtol * max_abs(ref) + tol.atol + (tol.use_lowp ? 2 * lowp_err : 0.0);
  if (err <= bound) return ::testing::AssertionSuccess();
  std::ostringstream s;
  s.precision(9);
  s << what << ": max error " << err << " at [" << at << "] (got " << got[at] << ", fp64 "
    << ref[at] << ") exceeds " << bound << " = " << tol.rtol << " * max |ref| " << max_abs(ref)
    << " + " << tol.atol;
  if (tol.use_lowp) s << " + 2 * low-precision error " << lowp_err;
  return ::testing::AssertionFailure() << s.str();
}

void expect_forward_close(sinkattn_dtype t, const Result& got, const Result& ref,
                          const Result* lowp) {
  Tolerance v = value_tolerance(t);
  EXPECT_TRUE(close_to_reference("out", got.out, ref.out, lowp ? &lowp->out : nullptr, v));
  // lse is fp32 whatever the dtype: the inputs are the same rounded values in every reference.
  Tolerance l{kFp32Rtol, kFp32Atol, v.use_lowp};
  EXPECT_TRUE(close_to_reference("lse", got.lse, ref.lse, lowp ? &lowp->lse : nullptr, l));
}

void expect_backward_close(sinkattn_dtype t, const Result& got, const Result& ref,
                           const Result* lowp, const DsinkCheck* own_forward) {
  Tolerance v = value_tolerance(t);
  EXPECT_TRUE(close_to_reference("dq", got.dq, ref.dq, lowp ? &lowp->dq : nullptr, v));
  EXPECT_TRUE(close_to_reference("dk", got.dk, ref.dk, lowp ? &lowp->dk : nullptr, v));
  EXPECT_TRUE(close_to_reference("dv", got.dv, ref.dv, lowp ? &lowp->dv : nullptr, v));
  if (!own_forward) return;
  if (t == SINKATTN_FLOAT32) {
    EXPECT_TRUE(close_to_reference("dsink", got.dsink, ref.dsink, nullptr, v));
  }
  for (size_t h = 0; h < got.dsink.size(); ++h) {
    // fp32 accumulation of the terms: a relative bound on their absolute sum.
    double bound = kFp32Rtol * own_forward->abs_sum[h] + kFp32Atol;
    EXPECT_LE(std::fabs(got.dsink[h] - own_forward->value[h]), bound)
        << "dsink[" << h << "] = " << got.dsink[h] << ", but the formula on the library's own out "
        << "and lse gives " << own_forward->value[h] << " (fp64 reference " << ref.dsink[h] << ")";
  }
}

namespace {
// Marks the running test skipped; the caller returns right after.
void skip(const std::string& why) { GTEST_SKIP() << why; }

// Forward and backward; false (skipped or failed, with the reason recorded) when they did not run.
bool run_both(Attention& a) {
  for (int pass = 0; pass < 2; ++pass) {
    sinkattn_status st = pass == 0 ? a.forward() : a.backward();
    if (a.dev == Device::kCuda && st == SINKATTN_ERROR_NOT_SUPPORTED)
      return skip(std::string("CUDA backend refuses: ") + sinkattn_last_error()), false;
    EXPECT_EQ(st, SINKATTN_OK) << (pass ? "backward: " : "forward: ") << sinkattn_last_error();
    if (st != SINKATTN_OK) return false;
    EXPECT_TRUE(a.workspace_slack_intact())
        << (pass ? "backward" : "forward") << " wrote past the workspace it asked for";
  }
  return true;
}
}  // namespace

std::unique_ptr<Attention> run_and_check(const Case& c, Device dev) {
  SCOPED_TRACE(replay_hint());
  auto owner = std::make_unique<Attention>(c, dev, test_seed());
  Attention& a = *owner;
  if (!run_both(a)) return nullptr;

  Result got = library_result(a), ref = reference_fp64(a);
  Result lowp;
  if (c.dtype != SINKATTN_FLOAT32) lowp = reference_lowp(a);
  const Result* yardstick = c.dtype != SINKATTN_FLOAT32 ? &lowp : nullptr;
  expect_forward_close(c.dtype, got, ref, yardstick);
  DsinkCheck own = dsink_from_forward(a, got);
  expect_backward_close(c.dtype, got, ref, yardstick, c.sinks ? &own : nullptr);
  EXPECT_TRUE(a.output_gaps_intact()) << "a strided output was written outside its elements";
  EXPECT_TRUE(a.inputs_intact()) << "an input was modified";
  return owner;
}

}  // namespace sinkattn_test
