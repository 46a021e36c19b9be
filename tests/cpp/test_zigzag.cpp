// Fused zigzag context parallelism (problem.zigzag_rank / zigzag_world): the grid of
// grid_cases.cpp runs the default backward; on CUDA the deterministic one takes another kernel
// (bwd_dq_kernel walks its own key ranges), checked here against the fp64 reference too.
#include <gtest/gtest.h>

#include "compare.h"

namespace sinkattn_test {
namespace {

#ifdef SINKATTN_TEST_CUDA
constexpr sinkattn_dtype BF16 = SINKATTN_BFLOAT16, F16 = SINKATTN_FLOAT16;

std::vector<Case> zigzag_cases() {
  return {
      // chunks of 37 rows: tiles straddle the two chunks; a window leaves a gap between them
      Case::fixed(BF16, 2, 74, 148, 8, 2, 64).with_causal().with_window(20, -1).with_zigzag(1, 2),
      Case::fixed(F16, 1, 256, 1024, 8, 1, 128).with_causal().with_zigzag(3, 4),
      Case::varlen(BF16, {{40, 160}, {0, 0}, {130, 520}, {2, 8}}, 12, 4, 64)
          .with_causal()
          .with_window(33, -1)
          .with_zigzag(2, 4),
      Case::fixed(BF16, 1, 90, 270, 4, 2, 64).with_window(12, 5).with_zigzag(0, 3),
      // d 64 rows over 1024: the Hopper forward's 192-row tiles across the two chunks
      Case::fixed(BF16, 1, 1300, 2600, 8, 2, 64).with_causal().with_zigzag(1, 2),
  };
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name(); }

class CudaZigzagDeterministic : public ::testing::TestWithParam<Case> {};
TEST_P(CudaZigzagDeterministic, MatchesReference) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  SCOPED_TRACE(replay_hint());
  std::unique_ptr<Attention> a = run_and_check(GetParam(), Device::kCuda);
  if (!a) return;  // skipped or failed, with the reason recorded
  ASSERT_EQ(a->backward(/*deterministic=*/true), SINKATTN_OK) << sinkattn_last_error();
  const Result got = library_result(*a), ref = reference_fp64(*a), lowp = reference_lowp(*a);
  const DsinkCheck own = dsink_from_forward(*a, got);
  expect_backward_close(a->c.dtype, got, ref, &lowp, a->c.sinks ? &own : nullptr);
}
INSTANTIATE_TEST_SUITE_P(Zigzag, CudaZigzagDeterministic, ::testing::ValuesIn(zigzag_cases()),
                         case_name);
#endif

}  // namespace
}  // namespace sinkattn_test
