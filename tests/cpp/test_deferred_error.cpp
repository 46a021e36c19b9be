// The deferred error of a packed CUDA call with broken cu_seqlens: its device-side check fills the
// outputs with NaN and keeps the rule broken, and the next CUDA call (or sinkattn_deferred_error)
// fails with it, once. Without a fault, and in a build without CUDA, there is nothing to report.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "attention_case.h"
#include "buffers.h"
#include "sinkattn/sinkattn.h"
#include "sinkattn/sinkattn.hpp"

namespace sinkattn_test {
namespace {

TEST(DeferredError, NoneWithoutABrokenCall) {
  EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_OK) << sinkattn_last_error();
  EXPECT_NO_THROW(sinkattn::check_deferred_error());
}

bool all_nan(const Tensor& t) {
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t h = 0; h < t.heads; ++h)
      for (int64_t c = 0; c < t.dim; ++c)
        if (!std::isnan(t.get(0, r, h, c))) return false;
  return true;
}

TEST(DeferredError, CudaBrokenOffsetsFailTheNextCallOnce) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  Attention a(Case::varlen(SINKATTN_BFLOAT16, {{5, 7}, {0, 3}, {130, 200}}, 4, 2, 64).with_causal(),
              Device::kCuda, test_seed());
  a.c.sq = 129;  // sequence 2 has 130 queries: understated, so the guard keeps a fault
  ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();  // waits for the guard
  EXPECT_TRUE(all_nan(a.out));

  a.c.sq = 130;  // a sound call: refused for the earlier one's fault, nothing written
  ASSERT_EQ(a.forward(), SINKATTN_ERROR_INVALID_ARGUMENT);
  const std::string msg = sinkattn_last_error();
  EXPECT_EQ(msg.rfind("sinkattn_fwd: problem.cu_seqlens_q[3] of a packed call enqueued earlier on "
                      "CUDA device 0 ", 0), 0u) << msg;
  EXPECT_NE(msg.find("got a sequence of length 130, expected at most the max length 129"),
            std::string::npos) << msg;
  EXPECT_TRUE(all_nan(a.out));

  EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_OK) << sinkattn_last_error();  // reported once
  ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
  EXPECT_FALSE(all_nan(a.out));

  a.c.sk = 199;  // the backward's guard keeps its own: cu_seqlens_k's sequence 2
  ASSERT_EQ(a.backward(), SINKATTN_OK) << sinkattn_last_error();
  try {
    sinkattn::check_deferred_error();
    ADD_FAILURE() << "no deferred error after the backward's broken offsets";
  } catch (const sinkattn::Exception& e) {
    EXPECT_EQ(e.status(), SINKATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(std::string(e.what()).rfind(
                  "sinkattn_deferred_error: problem.cu_seqlens_k[3] of a packed call", 0),
              0u) << e.what();
  }
  EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_OK) << sinkattn_last_error();
}

// A sequence far longer than the declared max (its rule broken) must not make a kernel index
// an array sized by that max (per 64 rows of a sequence: the dq handoff's counters, which main's
// library before sm80/sequence.h's clamp counted past and hung on) past the workspace, nor
// hang: the call completes, fills its outputs with NaN and leaves the 64 KB of poison after the
// workspace untouched.
// Paths: the narrow-window backward's dq handoff (query group 1), the band dq kernel (group 8),
// the causal backward's dq reductions, and the packed-group forward (one query declared).
TEST(DeferredError, CudaBrokenOffsetsStayInsideTheWorkspace) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  struct Broken {
    Case c;
    int64_t declared_sq;
    int64_t declared_sk = 0;  // 0: the longest sequence's
  };
  const Broken cases[] = {
      {Case::varlen(SINKATTN_BFLOAT16, {{40, 40}, {8000, 8000}}, 4, 4, 64).with_causal().with_window(63, 0), 64},
      {Case::varlen(SINKATTN_BFLOAT16, {{40, 40}, {8000, 8000}}, 8, 1, 64).with_causal().with_window(127, 0), 64},
      {Case::varlen(SINKATTN_BFLOAT16, {{40, 40}, {8000, 8000}}, 4, 2, 128).with_causal(), 64},
      {Case::varlen(SINKATTN_BFLOAT16, {{1, 500}, {40, 500}}, 8, 1, 64).with_causal(), 1},
      // causal under 64 declared keys: the band kernels with the mask's bounds cut to them
      {Case::varlen(SINKATTN_BFLOAT16, {{40, 40}, {8000, 8000}}, 8, 1, 64).with_causal(), 64, 64},
  };
  for (const Broken& b : cases) {
    SCOPED_TRACE(b.c.name());
    Attention a(b.c, Device::kCuda, test_seed());
    a.c.sq = b.declared_sq;
    if (b.declared_sk > 0) a.c.sk = b.declared_sk;
    ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();  // waits for the kernels
    EXPECT_TRUE(a.workspace_slack_intact()) << "forward wrote past its workspace";
    EXPECT_TRUE(all_nan(a.out));
    EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_ERROR_INVALID_ARGUMENT);  // the forward's fault
    ASSERT_EQ(a.backward(), SINKATTN_OK) << sinkattn_last_error();
    EXPECT_TRUE(a.workspace_slack_intact()) << "backward wrote past its workspace";
    EXPECT_TRUE(all_nan(a.dq));
    EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_ERROR_INVALID_ARGUMENT);  // the backward's
    EXPECT_EQ(sinkattn_deferred_error(), SINKATTN_OK) << sinkattn_last_error();
  }
}

}  // namespace
}  // namespace sinkattn_test
