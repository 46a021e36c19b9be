// The CPU backend's thread pool (src/cpu/parallel.cpp, compiled into this test with its own pool):
// every task of a job runs exactly once and before the job returns, back-to-back jobs never run
// one another's tasks, and an exception in a task reaches the caller.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <vector>

#include "cpu/parallel.h"

namespace sinkattn_test {
namespace {

using sinkattn::cpu::parallel_for;

constexpr double kBig = 1e12;  // a `work` estimate that always wakes the pool

// More threads than this machine's cores make a worker that wakes late for a finished job likely.
void oversubscribe() {
  static const bool once = [] { return setenv("SINKATTN_NUM_THREADS", "6", 0) == 0; }();
  ASSERT_TRUE(once);
}

TEST(ThreadPool, EveryTaskRunsOnce) {
  oversubscribe();
  for (int64_t n : {1, 2, 3, 7, 64, 1000, 4099}) {
    std::vector<std::atomic<int>> runs(n);
    parallel_for(n, kBig, [&](int64_t i) { runs[i].fetch_add(1); });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(runs[i].load(), 1) << "task " << i << " of " << n;
  }
}

TEST(ThreadPool, BackToBackJobsRunOnlyTheirOwnTasks) {
  oversubscribe();
  // A worker that read job j and claims a task after job j + 1 started must not run job j's
  // function on job j + 1's index: every job's function stays alive, so such a run would show
  // as a count off by one rather than as a crash.
  constexpr int kJobs = 4000, kMaxTasks = 8;
  std::vector<std::array<std::atomic<int>, kMaxTasks>> runs(kJobs);
  const auto task_count = [](int j) { return 2 + j % (kMaxTasks - 1); };  // 2..kMaxTasks
  std::vector<std::function<void(int64_t)>> tasks;
  for (int j = 0; j < kJobs; ++j) tasks.push_back([&runs, j](int64_t i) { runs[j][i].fetch_add(1); });
  for (int j = 0; j < kJobs; ++j) parallel_for(task_count(j), kBig, tasks[j]);
  int wrong = 0;
  for (int j = 0; j < kJobs; ++j)
    for (int i = 0; i < kMaxTasks; ++i) {
      const int want = i < task_count(j) ? 1 : 0;
      if (runs[j][i].load() != want && ++wrong <= 5)
        ADD_FAILURE() << "job " << j << " task " << i << " ran " << runs[j][i].load() << " times";
    }
  EXPECT_EQ(wrong, 0);
}

TEST(ThreadPool, ExceptionsReachTheCaller) {
  oversubscribe();
  EXPECT_THROW(parallel_for(1000, kBig,
                            [](int64_t i) {
                              if (i == 637) throw std::runtime_error("task 637");
                            }),
               std::runtime_error);
  std::atomic<int64_t> sum{0};  // and the pool still works
  parallel_for(1000, kBig, [&](int64_t i) { sum.fetch_add(i); });
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
}

TEST(ThreadPool, NestedJobsRunInline) {
  oversubscribe();
  std::vector<std::atomic<int>> runs(64 * 64);
  parallel_for(64, kBig, [&](int64_t i) {
    parallel_for(64, kBig, [&](int64_t k) { runs[i * 64 + k].fetch_add(1); });
  });
  for (auto& r : runs) ASSERT_EQ(r.load(), 1);
}

}  // namespace
}  // namespace sinkattn_test
