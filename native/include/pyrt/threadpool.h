// A small pool for per-token work: workers spin briefly for the next job, then sleep.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pyrt {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads counts the calling thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(i) for every i in [0, n); returns when all are done. Rethrows the first exception.
  void run(int64_t n, const std::function<void(int64_t)>& fn);
  // This thread's pool without workers: run() executes inline. For work that takes a pool but already
  // runs inside another pool's task (a pool's run() must not be re-entered from its own tasks).
  static ThreadPool& inline_pool();

 private:
  void worker_loop(uint64_t seen);
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_cv_, done_cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

int default_thread_count();

}  // namespace pyrt
