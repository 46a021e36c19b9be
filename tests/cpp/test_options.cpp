// Flags and optional outputs: deterministic backward, lse and dsink not requested, version and
// thread-local error text.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "attention_case.h"

namespace sinkattn_test {
namespace {

constexpr sinkattn_dtype F32 = SINKATTN_FLOAT32, BF16 = SINKATTN_BFLOAT16;

bool same_bytes(Blob& a, const std::vector<uint8_t>& b) { return a.host_bytes() == b; }
std::vector<uint8_t> bytes_of(Blob& b) { return b.host_bytes(); }

// GQA and packed documents: the shapes where dk, dv and dsink gather from many query rows.
Case determinism_case(sinkattn_dtype t) {
  return Case::varlen(t, {{300, 300}, {0, 9}, {77, 130}}, 8, 2, 64).with_causal();
}

void check_deterministic(const Case& c, Device dev) {
  SCOPED_TRACE(replay_hint());
  SINKATTN_SKIP_WITHOUT_DEVICE(dev);
  Attention a(c, dev, test_seed());
  sinkattn_status st = a.forward();
  if (dev == Device::kCuda && st == SINKATTN_ERROR_NOT_SUPPORTED) GTEST_SKIP() << sinkattn_last_error();
  ASSERT_EQ(st, SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(a.backward(true), SINKATTN_OK) << sinkattn_last_error();
  auto dq = bytes_of(a.dq.blob()), dk = bytes_of(a.dk.blob()), dv = bytes_of(a.dv.blob()),
       dsink = bytes_of(a.dsink.blob());
  for (int run = 0; run < 3; ++run) {
    ASSERT_EQ(a.backward(true), SINKATTN_OK) << sinkattn_last_error();
    EXPECT_TRUE(same_bytes(a.dq.blob(), dq)) << "dq differs on run " << run;
    EXPECT_TRUE(same_bytes(a.dk.blob(), dk)) << "dk differs on run " << run;
    EXPECT_TRUE(same_bytes(a.dv.blob(), dv)) << "dv differs on run " << run;
    EXPECT_TRUE(same_bytes(a.dsink.blob(), dsink)) << "dsink differs on run " << run;
  }
}

TEST(Deterministic, CpuFp32BitIdentical) { check_deterministic(determinism_case(F32), Device::kCpu); }
TEST(Deterministic, CpuBf16BitIdentical) { check_deterministic(determinism_case(BF16), Device::kCpu); }
#ifdef SINKATTN_TEST_CUDA
TEST(Deterministic, CudaBf16BitIdentical) { check_deterministic(determinism_case(BF16), Device::kCuda); }

// The forward is bit-identical run to run on every path; on sm_90 at head dim 64 its persistent
// blocks claim tiles from a counter in the workspace (zeroed by each call, the workspace reused):
// 11 row blocks x 24 heads, more tiles than SMs, so blocks claim several in a racing order.
TEST(Deterministic, CudaForwardBitIdentical) {
  SCOPED_TRACE(replay_hint());
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  Attention a(Case::fixed(BF16, 1, 2048, 2048, 24, 4, 64).with_causal(), Device::kCuda, test_seed());
  sinkattn_status st = a.forward();
  if (st == SINKATTN_ERROR_NOT_SUPPORTED) GTEST_SKIP() << sinkattn_last_error();
  ASSERT_EQ(st, SINKATTN_OK) << sinkattn_last_error();
  auto out = bytes_of(a.out.blob()), lse = bytes_of(a.lse.blob());
  for (int run = 0; run < 3; ++run) {
    ASSERT_EQ(a.forward(), SINKATTN_OK) << sinkattn_last_error();
    EXPECT_TRUE(same_bytes(a.out.blob(), out)) << "out differs on run " << run;
    EXPECT_TRUE(same_bytes(a.lse.blob(), lse)) << "lse differs on run " << run;
  }
}
#endif

void check_optional_outputs(const Case& c, Device dev) {
  SCOPED_TRACE(replay_hint());
  SINKATTN_SKIP_WITHOUT_DEVICE(dev);
  Attention a(c, dev, test_seed());
  sinkattn_status st = a.forward();
  if (dev == Device::kCuda && st == SINKATTN_ERROR_NOT_SUPPORTED) GTEST_SKIP() << sinkattn_last_error();
  ASSERT_EQ(st, SINKATTN_OK) << sinkattn_last_error();
  auto out = bytes_of(a.out.blob()), lse = bytes_of(a.lse.blob());
  ASSERT_EQ(a.backward(true), SINKATTN_OK) << sinkattn_last_error();
  auto dq = bytes_of(a.dq.blob()), dk = bytes_of(a.dk.blob()), dv = bytes_of(a.dv.blob());

  // Without lse: the same out, and the lse buffer untouched (still poison).
  ASSERT_EQ(a.forward(false), SINKATTN_OK) << sinkattn_last_error();
  EXPECT_TRUE(same_bytes(a.out.blob(), out)) << "out changed when lse was not requested";
  FloatArray poisoned(a.lse.size(), Device::kCpu);
  EXPECT_TRUE(same_bytes(a.lse.blob(), bytes_of(poisoned.blob()))) << "lse written though NULL";

  // Without dsink: the same dq, dk, dv from the original out and lse.
  std::memcpy(a.out.blob().host(), out.data(), out.size());
  std::memcpy(a.lse.blob().host(), lse.data(), lse.size());
  a.out.blob().upload(), a.lse.blob().upload();
  ASSERT_EQ(a.backward(true, false), SINKATTN_OK) << sinkattn_last_error();
  EXPECT_TRUE(same_bytes(a.dq.blob(), dq)) << "dq changed when dsink was not requested";
  EXPECT_TRUE(same_bytes(a.dk.blob(), dk)) << "dk changed when dsink was not requested";
  EXPECT_TRUE(same_bytes(a.dv.blob(), dv)) << "dv changed when dsink was not requested";
}

TEST(OptionalOutputs, CpuLseAndDsinkMayBeNull) {
  check_optional_outputs(Case::fixed(F32, 2, 33, 47, 4, 2, 64).with_causal(), Device::kCpu);
}
#ifdef SINKATTN_TEST_CUDA
TEST(OptionalOutputs, CudaLseAndDsinkMayBeNull) {
  check_optional_outputs(Case::fixed(BF16, 2, 33, 47, 4, 2, 64).with_causal(), Device::kCuda);
}
#endif

TEST(Version, MatchesHeader) {
  EXPECT_EQ(sinkattn_abi_version(), SINKATTN_ABI_VERSION);
  EXPECT_EQ(sinkattn_version(), SINKATTN_VERSION_MAJOR * 10000 + SINKATTN_VERSION_MINOR * 100 +
                                    SINKATTN_VERSION_PATCH);
#ifdef SINKATTN_TEST_CUDA
  EXPECT_EQ(sinkattn_has_cuda(), 1);
#else
  EXPECT_EQ(sinkattn_has_cuda(), 0);
#endif
}

TEST(LastError, IsThreadLocal) {
  ASSERT_NE(sinkattn_fwd(nullptr), SINKATTN_OK);
  ASSERT_STRNE(sinkattn_last_error(), "");
  std::string other;
  std::thread([&] { other = sinkattn_last_error(); }).join();
  EXPECT_EQ(other, "") << "a fresh thread sees another thread's error";
}

}  // namespace
}  // namespace sinkattn_test
