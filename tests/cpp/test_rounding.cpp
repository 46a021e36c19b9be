// 16-bit outputs are rounded to nearest (even), not truncated: a problem whose arithmetic is exact
// in fp32 must store the correctly rounded exact values. The grid's max-error bounds allow an ulp
// or more, so a truncating store passes them; here it cannot. The inputs, column by column (the
// "q half" is x < d/2, the "k half" the rest; scale 1/8, no sinks):
//   q     1 + m/16 in the q half, 0 in the k half;  k  0 in the q half, 1 + m/16 in the k half
//   v     column 0: 1 and 2, Sk/2 of each per (batch, kv head), mean 1.5; odd columns: one
//         value 1 + m/128 per column, in every row; even columns from 2: 1 + m/128 per row
//   dout  1 + m/16 in column 0 and the odd columns, 0 in the other even columns
// Every score is 0, so every probability is exactly 1 / Sk (a power of two, exact in bf16 and
// fp16 too, where a kernel rounds P). The constant columns cancel in dP - delta, which is
// dout[i][0] (v[j][0] - 1.5) = +-dout[i][0] / 2 exactly, so dS is exact in 16 bits as well, and
// each output is a short sum that needs at most 20 significant bits (fp32 holds 24):
//   out[i][x] = mean_j v[j][x]                        dv[j][x] = (1/Sk) sum_{h,i} dout[i][x]
//   dq[i][x] = scale/Sk dout[i][0] sum_j (v[j][0] - 1.5) k[j][x]                (k half)
//   dk[j][x] = scale/Sk (v[j][0] - 1.5) sum_{h,i} dout[i][0] q[i][x]            (q half)
// The backward's P comes from the stored fp32 lse (log Sk, ~1e-7 off): a kernel that keeps P or
// dS in fp32 (the CPU's) is off by that much, which can only decide exact ties between two dtype
// values, so dv, dq and dk may take either neighbour there.
#include <gtest/gtest.h>

#include <algorithm>
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
      out.push_back(Case::fixed(t, 1, 64, 64, 4, 2, d).without_sinks().with_scale(0.125f));
      out.push_back(Case::fixed(t, 2, 256, 256, 8, 2, d).without_sinks().with_scale(0.125f));
    }
  return out;
}

// The dtype's neighbours below and above x (exact in double), and whether x is halfway.
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
  std::uniform_int_distribution<int> m16(0, 15), m128(0, 127);
  const auto draw16 = [&] { return 1.0f + m16(rng) / 16.0f; };
  const auto draw128 = [&] { return 1.0f + m128(rng) / 128.0f; };
  const int64_t half = c.d / 2;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.hq; ++h)
      for (int64_t i = 0; i < c.sq; ++i)
        for (int64_t x = 0; x < c.d; ++x) {
          a.q.set(b, i, h, x, x < half ? draw16() : 0.0f);
          a.dout.set(b, i, h, x, x == 0 || x % 2 ? draw16() : 0.0f);
        }
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t hk = 0; hk < c.hkv; ++hk) {
      std::vector<float> ones_twos(c.sk, 1.0f);
      std::fill(ones_twos.begin() + c.sk / 2, ones_twos.end(), 2.0f);
      std::shuffle(ones_twos.begin(), ones_twos.end(), rng);
      for (int64_t x = 0; x < c.d; ++x) {
        const float column_value = draw128();
        for (int64_t j = 0; j < c.sk; ++j) {
          a.k.set(b, j, hk, x, x < half ? 0.0f : draw16());
          a.v.set(b, j, hk, x, x == 0 ? ones_twos[j] : x % 2 ? column_value : draw128());
        }
      }
    }
  for (Tensor* t : {&a.q, &a.k, &a.v, &a.dout}) t->blob().upload();
  ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(a.backward(), SINKATTN_OK) << sinkattn_last_error();

  const int64_t group = c.hq / c.hkv;
  const double scale = c.softmax_scale();
  int failures = 0;
  const auto check = [&](const char* name, double exact, float got, bool any_tie, int64_t b,
                         int64_t row, int64_t head, int64_t x) {
    if (failures >= 5) return;
    const auto r = rounded(c.dtype, exact, got, any_tie);
    failures += !r;
    EXPECT_TRUE(r) << name << "[" << b << ", " << row << ", " << head << ", " << x << "]";
  };
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t hk = 0; hk < c.hkv; ++hk) {
      const int64_t h0 = hk * group, h1 = h0 + group;
      for (int64_t x = 0; x < c.d; ++x) {
        double v_sum = 0.0, dout_sum = 0.0, dout_q = 0.0;
        for (int64_t j = 0; j < c.sk; ++j) v_sum += a.v.get(b, j, hk, x);
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t i = 0; i < c.sq; ++i) {
            dout_sum += a.dout.get(b, i, h, x);
            dout_q += double(a.dout.get(b, i, h, 0)) * a.q.get(b, i, h, x);
          }
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t i = 0; i < c.sq; ++i)
            check("out", v_sum / c.sk, a.out.get(b, i, h, x), false, b, i, h, x);
        for (int64_t j = 0; j < c.sk; ++j) {
          check("dv", dout_sum / c.sk, a.dv.get(b, j, hk, x), true, b, j, hk, x);
          const double sign = a.v.get(b, j, hk, 0) - 1.5;
          check("dk", scale / c.sk * sign * dout_q, a.dk.get(b, j, hk, x), true, b, j, hk, x);
        }
        double signed_k = 0.0;
        for (int64_t j = 0; j < c.sk; ++j)
          signed_k += (a.v.get(b, j, hk, 0) - 1.5) * a.k.get(b, j, hk, x);
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t i = 0; i < c.sq; ++i) {
            const double exact = scale / c.sk * a.dout.get(b, i, h, 0) * signed_k;
            check("dq", exact, a.dq.get(b, i, h, x), true, b, i, h, x);
          }
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
