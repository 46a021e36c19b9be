// ptx::exp2f_fma, the exp2 that the Hopper backward runs on the FMA pipe for part of its
// exponentials: its documented error bound and its zeros, on the host (the header is host and
// device, so this is the code the kernels compile).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cuda/common/exp2_fma.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::ptx::exp2f_fma;

// Relative error of exp2f_fma(x) against the double-precision 2^x.
double rel_error(float x) {
  const double ref = std::exp2(static_cast<double>(x));
  return std::fabs(static_cast<double>(exp2f_fma(x)) - ref) / ref;
}

TEST(Exp2Fma, RelativeErrorWithinBound) {
  // Documented: 7.5e-5 from the polynomial, plus a few fp32 roundings.
  constexpr double kBound = 7.6e-5;
  double worst = 0.0;
  float worst_x = 0.f;
  constexpr int kSteps = 1 << 22;
  for (int i = 0; i <= kSteps; ++i) {  // [-126, 8], every fraction of the rounding step sampled
    const float x = -126.f + 134.f * static_cast<float>(i) / kSteps;
    const double e = rel_error(x);
    if (!(e <= worst)) worst = e, worst_x = x;
  }
  for (float x : {0.f, -0.5f, 0.5f, -1.f, 1.f, -0.49999997f, 0.49999997f, -125.5f, -126.f, 100.f}) {
    const double e = rel_error(x);
    if (!(e <= worst)) worst = e, worst_x = x;
  }
  EXPECT_LE(worst, kBound) << "at x = " << worst_x;
  EXPECT_GT(worst, 1e-5) << "a degree-3 polynomial cannot be this exact: is the FMA path in use?";
}

TEST(Exp2Fma, ZeroBelowTheNormalRange) {
  // As ex2.approx.ftz: no denormals, and masked scores (-inf) give exactly 0.
  EXPECT_EQ(exp2f_fma(-std::numeric_limits<float>::infinity()), 0.f);
  EXPECT_EQ(exp2f_fma(-1000.f), 0.f);
  EXPECT_EQ(exp2f_fma(-127.f), 0.f);
  EXPECT_EQ(exp2f_fma(-126.6f), 0.f);
  EXPECT_GE(exp2f_fma(-126.f), std::numeric_limits<float>::min() * 0.9999f);
}

}  // namespace
}  // namespace sinkattn_test
