// A persistent thread pool for the CPU backend: created on first use, sized by the environment
// variable SINKATTN_NUM_THREADS (else std::thread::hardware_concurrency()).
#pragma once

#include <cstdint>
#include <functional>

namespace sinkattn {
namespace cpu {

// Threads that parallel_for uses, the calling thread included (>= 1).
int num_threads();

// Runs task(i) for every i in [0, n), spread over the pool with dynamic scheduling; the calling
// thread works too and the call returns when all tasks are done. Which thread runs a task is not
// fixed, so a task must not depend on it (results stay deterministic). Runs inline when n or
// `work` (a rough cost in flops) is too small to pay for waking threads, when the pool is busy
// with another caller's job (including nested calls), or in a child process after fork.
void parallel_for(int64_t n, double work, const std::function<void(int64_t)>& task);

}  // namespace cpu
}  // namespace sinkattn
