#include "cpu/parallel.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace sinkattn {
namespace cpu {
namespace {

// Below this much work a call runs inline: waking a sleeping thread costs tens of microseconds.
constexpr double kMinParallelFlops = 2e6;

int threads_from_env() {
  const char* env = std::getenv("SINKATTN_NUM_THREADS");
  if (env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (*end == '\0' && v >= 1 && v <= 1024) return static_cast<int>(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

// Set on pool threads and on a caller while it runs a job: a nested call runs inline.
thread_local bool in_pool_job = false;

// Tasks are claimed from one atomic word holding (job generation << 32 | next index), so a worker
// that wakes after its job has ended claims nothing, and the caller waits only for tasks still
// running, never for a worker that has not been scheduled yet (which on a loaded machine can take
// a whole time slice).
class Pool {
 public:
  explicit Pool(int threads) : threads_(threads), pid_(getpid()) {
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this] { worker(); });
  }
  // Never destroyed (see pool()): workers sleep until the process exits.

  // False when the job could not be taken (busy or forked); the caller then runs it inline.
  bool run(int64_t n, const std::function<void(int64_t)>& task) {
    if (threads_ == 1 || getpid() != pid_ || n >= (int64_t(1) << 32)) return false;
    std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    uint32_t gen;
    {
      std::lock_guard<std::mutex> lk(m_);
      gen = ++generation_;
      task_ = &task;
      n_ = n;
      done_.store(0);
      claim_.store(static_cast<uint64_t>(gen) << 32);
    }
    wake_.notify_all();
    work(gen, &task, n);
    std::unique_lock<std::mutex> lk(m_);
    finished_.wait(lk, [&] { return done_.load() == n; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return true;
  }

 private:
  // Runs tasks of job `gen` until none is left to claim. Every task runs even if one throws; the
  // first exception reaches the caller.
  void work(uint32_t gen, const std::function<void(int64_t)>* task, int64_t n) {
    for (;;) {
      uint64_t c = claim_.load();
      do {
        if (static_cast<uint32_t>(c >> 32) != gen || static_cast<int64_t>(c & 0xffffffffu) >= n)
          return;
      } while (!claim_.compare_exchange_weak(c, c + 1));
      try {
        (*task)(static_cast<int64_t>(c & 0xffffffffu));
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
      }
      if (done_.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lk(m_);
        finished_.notify_all();
      }
    }
  }

  void worker() {
    in_pool_job = true;
    uint32_t seen = 0;
    for (;;) {
      const std::function<void(int64_t)>* task;
      int64_t n;
      {
        std::unique_lock<std::mutex> lk(m_);
        wake_.wait(lk, [&] { return generation_ != seen && task_ != nullptr; });
        seen = generation_;
        task = task_;
        n = n_;
      }
      work(seen, task, n);
    }
  }

  const int threads_;
  const pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one job at a time
  std::mutex m_;          // guards the fields below, and the waits
  std::condition_variable wake_, finished_;
  uint32_t generation_ = 0;
  const std::function<void(int64_t)>* task_ = nullptr;  // null between jobs
  int64_t n_ = 0;
  std::exception_ptr error_;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at exit (or dlclose) can hang.
  static Pool* p = new Pool(threads_from_env());
  return *p;
}

}  // namespace

int num_threads() {
  static const int n = threads_from_env();
  return n;
}

void parallel_for(int64_t n, double work, const std::function<void(int64_t)>& task) {
  if (n <= 0) return;
  bool ran = false;
  if (n > 1 && work >= kMinParallelFlops && !in_pool_job && num_threads() > 1) {
    struct Mark {  // in_pool_job is reset even when a task throws
      Mark() { in_pool_job = true; }
      ~Mark() { in_pool_job = false; }
    } mark;
    ran = pool().run(n, task);
  }
  if (!ran)
    for (int64_t i = 0; i < n; ++i) task(i);
}

}  // namespace cpu
}  // namespace sinkattn
