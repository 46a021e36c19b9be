// cuda::per_device, the lock-free per-device cache behind device_arch and blocks_per_sm: a device's
// answer is asked once and kept, a failed (non-positive) answer is asked again, ordinals outside
// the 64 slots are asked every time, and threads racing on a first query all get the answer.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cuda/common/per_device.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::per_device;

TEST(PerDevice, AsksOncePerDevice) {
  std::atomic<int> known[64] = {};
  int asked = 0;
  auto query = [&] { return 10 + ++asked; };
  EXPECT_EQ(per_device(known, 3, query), 11);
  EXPECT_EQ(per_device(known, 3, query), 11);
  EXPECT_EQ(per_device(known, 5, query), 12);  // another device: its own query
  EXPECT_EQ(per_device(known, 3, query), 11);
  EXPECT_EQ(asked, 2);
}

TEST(PerDevice, AsksAgainAfterAFailure) {
  std::atomic<int> known[64] = {};
  int answer = 0, asked = 0;
  auto query = [&] { ++asked; return answer; };
  EXPECT_EQ(per_device(known, 0, query), 0);
  EXPECT_EQ(per_device(known, 0, query), 0);
  answer = 7;
  EXPECT_EQ(per_device(known, 0, query), 7);
  answer = 9;  // kept: no further query
  EXPECT_EQ(per_device(known, 0, query), 7);
  EXPECT_EQ(asked, 3);
}

TEST(PerDevice, OrdinalsOutsideTheSlotsAskEveryTime) {
  std::atomic<int> known[64] = {};
  int asked = 0;
  auto query = [&] { return ++asked; };
  for (int device : {-1, 64, 1000}) {
    per_device(known, device, query);
    per_device(known, device, query);
  }
  EXPECT_EQ(asked, 6);
  for (const auto& k : known) EXPECT_EQ(k.load(), 0);  // nothing written outside 0..63
}

TEST(PerDevice, ThreadsRacingOnTheFirstQueryAgree) {
  std::atomic<int> known[64] = {};
  std::atomic<int> asked{0};
  std::vector<int> got(8, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      got[i] = per_device(known, 2, [&] { asked.fetch_add(1); return 42; });
    });
  for (auto& t : threads) t.join();
  for (int g : got) EXPECT_EQ(g, 42);
  EXPECT_GE(asked.load(), 1);
  EXPECT_EQ(per_device(known, 2, [] { return -1; }), 42);
}

}  // namespace
}  // namespace sinkattn_test
