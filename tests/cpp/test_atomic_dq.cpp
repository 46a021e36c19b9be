// The atomic backward's dq (parts added into an fp32 accumulator in whatever order the key
// blocks reach a query block, then converted) against the deterministic backward's dq, which
// another kernel computes without the accumulator, on shapes the fp64 grid keeps small: every
// key block of a non-causal head adding into query block 0 at once; query blocks no key block
// walks (dq = 0); packed sequences cut inside a 64-row box, whose rows past a sequence's end
// land in the next sequence's first rows (as exact zeros); narrow windows under zigzag; many
// short sequences beside a long one (the prep and the dq kernels on grids over slots). The
// workspace is poisoned before every call (attention_case.cpp), so rows read from an
// accumulator that was never zeroed or written show as NaN.
#include <gtest/gtest.h>

#include <cmath>

#include "attention_case.h"
#include "compare.h"
#include "grid_cases.h"

namespace sinkattn_test {
namespace {
#ifdef SINKATTN_TEST_CUDA

constexpr sinkattn_dtype BF16 = SINKATTN_BFLOAT16;

class CudaAtomicDq : public ::testing::TestWithParam<Case> {};

TEST_P(CudaAtomicDq, MatchesTheDeterministicDq) {
  SCOPED_TRACE(replay_hint());
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  Attention a(GetParam(), Device::kCuda, test_seed());
  sinkattn_status st = a.forward();
  if (st == SINKATTN_ERROR_NOT_SUPPORTED) GTEST_SKIP() << sinkattn_last_error();
  ASSERT_EQ(st, SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(a.backward(true), SINKATTN_OK) << sinkattn_last_error();
  const std::vector<double> ref = library_result(a).dq;
  // The two sums differ in order only: at most one bf16 step (2^-7 relative) apart.
  const Tolerance tol{std::ldexp(1.0, -7), 1e-6, false};
  for (int run = 0; run < 4; ++run) {  // the additions race differently each time
    ASSERT_EQ(a.backward(false), SINKATTN_OK) << sinkattn_last_error();
    EXPECT_TRUE(close_to_reference("dq, run " + std::to_string(run), library_result(a).dq, ref,
                                   nullptr, tol));
  }
}

std::vector<Case> cases() {
  const std::vector<std::pair<int, int>> cut = {{200, 200}, {64, 64},   {129, 300},
                                                {0, 50},    {700, 700}, {65, 65}};
  return {
      // 16 key blocks of one head add into query block 0 together
      Case::fixed(BF16, 1, 2048, 2048, 4, 4, 64),
      Case::fixed(BF16, 1, 2048, 2048, 4, 4, 128),
      Case::fixed(BF16, 2, 1000, 1500, 8, 2, 64).with_window(700, 400),
      // bottom-right causal: the first 500 rows see no key, their blocks no key block walks
      Case::fixed(BF16, 1, 600, 100, 8, 1, 64).with_causal(),
      Case::fixed(BF16, 1, 600, 100, 8, 1, 128).with_causal(),
      // packed sequences cut inside a 64-row box, causal and not
      Case::varlen(BF16, cut, 8, 2, 64).with_causal(),
      Case::varlen(BF16, cut, 8, 2, 128).with_causal(),
      Case::varlen(BF16, cut, 4, 4, 64),
      Case::varlen(BF16, cut, 4, 1, 128).with_window(-1, 20),
      Case::varlen(BF16, short_docs_and_a_long_one(), 8, 2, 64).with_causal(),
      Case::varlen(BF16, short_docs_and_a_long_one(), 8, 2, 128).with_causal(),
      // narrow windows under zigzag: the narrow Hopper kernel adds dq too (no handoff there)
      Case::fixed(BF16, 1, 640, 2560, 8, 2, 64).with_causal().with_window(200, -1).with_zigzag(1, 4),
      Case::fixed(BF16, 1, 640, 2560, 8, 2, 128).with_causal().with_window(200, -1).with_zigzag(2, 4),
  };
}

INSTANTIATE_TEST_SUITE_P(AtomicDq, CudaAtomicDq, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name(); });

#endif
}  // namespace
}  // namespace sinkattn_test
