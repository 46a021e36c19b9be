// 16-bit outputs are rounded to nearest (even), not truncated: a problem whose arithmetic is exact
// in fp32 must store the correctly rounded exact values. The grid's max-error bounds allow an ulp
// or more, so a truncating store passes them; here it cannot.
//
// q = 0 makes every score 0, so without sinks each row's probabilities are exactly 1 / Sk (a power
// of two, exact in bf16 and fp16 too, where a kernel rounds P). v and dout hold values
// 1 + m / 128 (m < 128): a sum of up to 2^9 of them needs at most 17 significant bits, so
// out = mean_j v_j and dv = (1 / Sk) sum over the group's heads and rows of dout are exact before
// their one rounding. dv's P comes from the stored fp32 lse (log Sk, not exact): off by ~1e-7
// relative, which can only decide exact ties between two dtype values, so those take either.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attention_case.h"

namespace sinkattn_test {
namespace {

constexpr sinkattn_dtype BF16 = SINKATTN_BFLOAT16, F16 = SINKATTN_FLOAT16;

std::vector<Case> rounding_cases() {
  std::vector<Case> out;
  for (sinkattn_dtype t : {BF16, F16})
    for (int d : {32, 64, 96, 128, 256}) {
      out.push_back(Case::fixed(t, 1, 64, 64, 4, 2, d).without_sinks());
      out.push_back(Case::fixed(t, 2, 256, 256, 8, 2, d).without_sinks());
    }
  return out;
}

// The dtype's neighbours below and above |x| (x exact in double), and whether x is halfway.
struct Neighbours {
  double below, above;
  bool tie;
};
Neighbours neighbours(sinkattn_dtype t, double x) {
  int e = 0;
  std::frexp(x, &e);  // x in [2^(e-1), 2^e)
  const double ulp = std::max(std::ldexp(1.0, e - 1 - (t == F16 ? 10 : 7)),
                              t == F16 ? std::ldexp(1.0, -24) : 0.0);
  const double below = std::floor(x / ulp) * ulp;
  return {below, below + ulp, x - below == ulp / 2};
}

// Fails unless got is x rounded to nearest even in dtype t (at a tie: either neighbour when
// `any_tie`).
::testing::AssertionResult rounded(sinkattn_dtype t, double x, float got, bool any_tie) {
  const double want = round_to(t, static_cast<float>(x));  // x fits a float exactly
  const Neighbours n = neighbours(t, x);
  if (got == want || (any_tie && n.tie && (got == n.below || got == n.above)))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "got " << got << " for the exact " << x << ": round to nearest gives " << want
         << " (neighbours " << n.below << ", " << n.above << (n.tie ? ", a tie)" : ")");
}

void check_rounding(const Case& c, Device dev) {
  Attention a(c, dev, test_seed());
  std::mt19937_64 rng(test_seed());
  std::uniform_int_distribution<int> m(0, 127);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.hq; ++h)
      for (int64_t x = 0; x < c.d; ++x) {
        for (int64_t i = 0; i < c.sq; ++i) {
          a.q.set(b, i, h, x, 0.0f);
          a.dout.set(b, i, h, x, 1.0f + m(rng) / 128.0f);
        }
        if (h < c.hkv)
          for (int64_t j = 0; j < c.sk; ++j) a.v.set(b, j, h, x, 1.0f + m(rng) / 128.0f);
      }
  for (Tensor* t : {&a.q, &a.v, &a.dout}) t->blob().upload();
  ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(a.backward(), SINKATTN_OK) << sinkattn_last_error();

  const int64_t group = c.hq / c.hkv;
  int failures = 0;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t hk = 0; hk < c.hkv; ++hk)
      for (int64_t x = 0; x < c.d && failures < 5; ++x) {
        double v_sum = 0.0, dout_sum = 0.0;
        for (int64_t j = 0; j < c.sk; ++j) v_sum += a.v.get(b, j, hk, x);
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (int64_t i = 0; i < c.sq; ++i) dout_sum += a.dout.get(b, i, h, x);
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (int64_t i = 0; i < c.sq; ++i) {
            const auto r = rounded(c.dtype, v_sum / c.sk, a.out.get(b, i, h, x), false);
            failures += !r;
            EXPECT_TRUE(r) << "out[" << b << ", " << i << ", " << h << ", " << x << "]";
          }
        for (int64_t j = 0; j < c.sk; ++j) {
          const auto r = rounded(c.dtype, dout_sum / c.sk, a.dv.get(b, j, hk, x), true);
          failures += !r;
          EXPECT_TRUE(r) << "dv[" << b << ", " << j << ", " << hk << ", " << x << "]";
        }
      }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name(); }

class CpuRounding : public ::testing::TestWithParam<Case> {};
TEST_P(CpuRounding, ExactResultsRoundToNearest) {
  SCOPED_TRACE(replay_hint());
  check_rounding(GetParam(), Device::kCpu);
}
INSTANTIATE_TEST_SUITE_P(Rounding, CpuRounding, ::testing::ValuesIn(rounding_cases()), case_name);

#ifdef SINKATTN_TEST_CUDA
class CudaRounding : public ::testing::TestWithParam<Case> {};
TEST_P(CudaRounding, ExactResultsRoundToNearest) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  SCOPED_TRACE(replay_hint());
  check_rounding(GetParam(), Device::kCuda);
}
INSTANTIATE_TEST_SUITE_P(Rounding, CudaRounding, ::testing::ValuesIn(rounding_cases()), case_name);
#endif

}  // namespace
}  // namespace sinkattn_test
