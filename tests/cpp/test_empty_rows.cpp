// Rows that see no key: out exactly 0, lse = the sink (or -inf without one), dq exactly 0,
// no NaN anywhere; and the rest of the problem still matches the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "compare.h"
#include "reference.h"
#include "references.h"

namespace sinkattn_test {
namespace {

constexpr sinkattn_dtype F32 = SINKATTN_FLOAT32, BF16 = SINKATTN_BFLOAT16, F16 = SINKATTN_FLOAT16;

// Each leaves some rows with no visible key.
std::vector<Case> empty_row_cases(const std::vector<sinkattn_dtype>& dtypes) {
  std::vector<Case> base = {
      Case::fixed(F32, 1, 9, 4, 2, 1, 32).with_causal(),  // rows 0..4 sit before key 0
      Case::fixed(F32, 1, 9, 4, 2, 1, 32).with_causal().without_sinks(),
      Case::fixed(F32, 2, 9, 4, 4, 2, 64).with_window(0, 0),  // the diagonal only, shifted
      Case::fixed(F32, 1, 10, 3, 2, 2, 64).with_window(-1, 2).without_sinks(),
      Case::varlen(F32, {{3, 0}, {4, 4}, {2, 0}}, 2, 1, 64),  // documents without keys
      Case::varlen(F32, {{3, 0}, {4, 4}, {2, 0}}, 2, 1, 64).without_sinks(),
  };
  std::vector<Case> out;
  for (sinkattn_dtype t : dtypes)
    for (const Case& c : base) out.push_back(c.with_dtype(t));
  return out;
}

void check_empty_rows(const Case& c, Device dev) {
  std::unique_ptr<Attention> ran = run_and_check(c, dev);
  if (!ran) return;
  SCOPED_TRACE(replay_hint());
  const Attention& a = *ran;
  int empty_rows = 0;
  for (const Seq& s : a.seqs())
    for (int64_t h = 0; h < c.hq; ++h) {
      sinkattn_ref::Head hd;
      hd.sq = s.nq, hd.sk = s.nk, hd.causal = c.causal, hd.left = c.left, hd.right = c.right;
      for (int64_t i = 0; i < s.nq; ++i) {
        bool sees_key = false;
        for (int64_t j = 0; j < s.nk; ++j) sees_key |= sinkattn_ref::visible(hd, i, j);
        if (sees_key) continue;
        ++empty_rows;
        for (int64_t x = 0; x < c.d; ++x) {
          ASSERT_EQ(a.out.get(s.tb, s.q0 + i, h, x), 0.0f) << "out, row " << i << " head " << h;
          ASSERT_EQ(a.dq.get(s.tb, s.q0 + i, h, x), 0.0f) << "dq, row " << i << " head " << h;
        }
        float lse = a.lse.host()[s.lse0 + h * s.lse_head_stride + i];
        if (c.sinks) {
          float sink = a.sinks.host()[h];
          EXPECT_NEAR(lse, sink, 1e-6 * std::max(1.0f, std::fabs(sink))) << "row " << i;
        } else {
          EXPECT_EQ(lse, -std::numeric_limits<float>::infinity()) << "row " << i;
        }
      }
    }
  EXPECT_GT(empty_rows, 0) << "the case was meant to have rows without keys";
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name(); }

class CpuEmptyRows : public ::testing::TestWithParam<Case> {};
TEST_P(CpuEmptyRows, ZeroOutputsNoNan) { check_empty_rows(GetParam(), Device::kCpu); }
INSTANTIATE_TEST_SUITE_P(EmptyRows, CpuEmptyRows,
                         ::testing::ValuesIn(empty_row_cases({F32, BF16, F16})), case_name);

#ifdef SINKATTN_TEST_CUDA
class CudaEmptyRows : public ::testing::TestWithParam<Case> {};
TEST_P(CudaEmptyRows, ZeroOutputsNoNan) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  check_empty_rows(GetParam(), Device::kCuda);
}
INSTANTIATE_TEST_SUITE_P(EmptyRows, CudaEmptyRows,
                         ::testing::ValuesIn(empty_row_cases({BF16, F16})), case_name);
#endif

}  // namespace
}  // namespace sinkattn_test
