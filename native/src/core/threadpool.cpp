#include "pyrt/threadpool.h"

#include <algorithm>

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
    busy_workers_ = static_cast<int>(workers_.size());
    generation_.fetch_add(1);
  }
  wake_cv_.notify_all();
  drain();
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return busy_workers_ == 0; });
    job_ = nullptr;
    err = error_;
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    // Spin a little first: decode issues a job every few tens of microseconds.
    for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_acquire) == seen; ++spin) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    {
      std::unique_lock<std::mutex> lk(mu_);
      wake_cv_.wait(lk, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_) return;
    }
    drain();
    {
      std::lock_guard<std::mutex> lk(mu_);
      --busy_workers_;
    }
    done_cv_.notify_one();
  }
}

}  // namespace pyrt
