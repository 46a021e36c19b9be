// The CUDA backward's workspace grows with the packed rows, not with batch x the longest
// sequence: the arrays kept per 64 query rows of a sequence (the dsink partials, the dq handoff
// counters) take one slot per row group a sequence has (sm80/sequence.h group0). A batch of many
// one-token documents beside a long one asks for what the same rows as one sequence ask for,
// plus a slot per extra sequence and head in each array. (Sized by batch x the longest
// sequence, they asked 110 times that here, and ~34 GB for 65,535 documents under a 128k max.)
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "attention_case.h"

namespace sinkattn_test {
namespace {
#ifdef SINKATTN_TEST_CUDA

size_t bwd_workspace(const Case& c, bool deterministic = false) {
  Attention a(c, Device::kCuda, test_seed());
  sinkattn_bwd_params p = a.bwd_params(deterministic);
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

// On Hopper a causal backward of up to 512 keys outside the band kernels runs the narrow-window
// kernel (dispatch.cu kernel_mask), whose dq is handed from key block to key block through an
// fp32 buffer; the deterministic mode has no such buffer otherwise. So the buffer is there at 512
// keys and not at 513, fixed and packed.
TEST(CudaWorkspace, ShortCausalBackwardHandsDqOn) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  for (int keys : {512, 513}) {
    for (const Case& c : {Case::fixed(SINKATTN_BFLOAT16, 2, keys, keys, 8, 2, 128).with_causal(),
                          Case::varlen(SINKATTN_BFLOAT16, {{keys, keys}, {100, 100}}, 8, 2, 128)
                              .with_causal()}) {
      SCOPED_TRACE(c.name());
      Attention a(c, Device::kCuda, test_seed());
      sinkattn_bwd_params p = a.bwd_params(true);
      if (std::string(sinkattn_bwd_kernel(&p)).rfind("cuda sm90", 0) != 0)
        GTEST_SKIP() << "not the Hopper path: " << sinkattn_bwd_kernel(&p);
      const size_t rows = c.is_varlen() ? keys + 100 : 2 * keys;
      const size_t dq_buffer = sizeof(float) * rows * 8 * 128;
      if (keys <= 512)
        EXPECT_GE(bwd_workspace(c, true), dq_buffer);
      else
        EXPECT_LT(bwd_workspace(c, true), dq_buffer);
    }
  }
}

#endif
}  // namespace
}  // namespace sinkattn_test
