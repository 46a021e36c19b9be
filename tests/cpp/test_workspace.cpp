// The CUDA backward's workspace grows with the packed rows, not with batch x the longest
// sequence: the arrays kept per 64 query rows of a sequence (the dsink partials, the dq handoff
// counters) take one slot per row group a sequence has (sm80/sequence.h group0). A batch of many
// one-token documents beside a long one asks for what the same rows as one sequence ask for,
// plus a slot per extra sequence and head in each array. (Sized by batch x the longest
// sequence, they asked 110 times that here, and ~34 GB for 65,535 documents under a 128k max.)
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "attention_case.h"

namespace sinkattn_test {
namespace {
#ifdef SINKATTN_TEST_CUDA

size_t bwd_workspace(const Case& c) {
  Attention a(c, Device::kCuda, test_seed());
  sinkattn_bwd_params p = a.bwd_params(false);
  size_t bytes = 0;
  EXPECT_EQ(sinkattn_bwd_workspace_size(&p, &bytes), SINKATTN_OK) << sinkattn_last_error();
  return bytes;
}

TEST(CudaWorkspace, PackedBackwardGrowsWithTheRowsNotTheLongestSequence) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  constexpr int kRows = 8192, kShort = 1000, kHeads = 8;
  std::vector<std::pair<int, int>> many(kShort, {1, 1});
  many.push_back({kRows - kShort, kRows - kShort});
  // Two arrays at most, each one slot more per extra sequence and head, and rounded to 256 bytes.
  const size_t slack = 2 * (sizeof(float) * kShort * kHeads + 256);
  // Causal (the prep's partials); window 127 with groups of 8 (the band dq kernel's partials)
  // and of 4 (the narrow-window kernel's handoff counters too, on Hopper).
  for (auto [left, heads_kv] : {std::pair<int, int>{-1, 1}, {127, 1}, {127, 2}}) {
    const Case one = Case::varlen(SINKATTN_BFLOAT16, {{kRows, kRows}}, kHeads, heads_kv, 64)
                         .with_causal()
                         .with_window(left, -1);
    const Case packed =
        Case::varlen(SINKATTN_BFLOAT16, many, kHeads, heads_kv, 64).with_causal().with_window(left, -1);
    EXPECT_LE(bwd_workspace(packed), bwd_workspace(one) + slack)
        << "window left " << left << ", kv heads " << heads_kv;
  }
}

#endif
}  // namespace
}  // namespace sinkattn_test
