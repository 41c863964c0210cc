#include "pyrt/threadpool.h"

#include <algorithm>
#include <thread>

namespace pyrt {

int default_thread_count() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 8u));
}

ThreadPool::ThreadPool(int n_threads) {
  // Workers start from generation 0, fixed here: reading it inside the thread could miss a job (or
  // the shutdown) published before the thread got to run.
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(0); });
}

ThreadPool& ThreadPool::inline_pool() {
  thread_local ThreadPool pool(1);
  return pool;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain() {
  for (;;) {
    int64_t i = next_.fetch_add(1);
    if (i >= n_tasks_) return;
    try {
      (*job_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(n_tasks_);
    }
  }
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
// Spin this many rounds (well under a millisecond) before sleeping: decode issues a job every few
// tens of microseconds, and a futex sleep/wake costs about as much as a small job.
constexpr int kSpin = 20000;
// After this many rounds of pause, each round also yields the core: when other processes compete for
// the cores, the thread being waited for may be descheduled, and a spinning waiter that keeps its core
// would hold it back for a whole time slice per job (decode slowed 20x beside a second busy process).
constexpr int kPauseOnly = 1000;
inline void spin_round(int spin) {
  if (spin < kPauseOnly)
    cpu_relax();
  else
    std::this_thread::yield();
}
}  // namespace

void ThreadPool::run(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    n_tasks_ = n;
    next_.store(0);
    error_ = nullptr;
    busy_workers_.store(static_cast<int>(workers_.size()));
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_cv_.notify_all();
  drain();
  // The caller spins for the workers too: sleeping here would add a wake-up latency to every job.
  for (int spin = 0; spin < kSpin && busy_workers_.load(std::memory_order_acquire) != 0; ++spin) spin_round(spin);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    job_ = nullptr;
    err = error_;
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    for (int spin = 0; spin < kSpin && generation_.load(std::memory_order_acquire) == seen; ++spin) spin_round(spin);
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      wake_cv_.wait(lk, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    drain();
    if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Last one out wakes the caller if it went to sleep (taking the lock orders this after its check).
      std::lock_guard<std::mutex> lk(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace pyrt
