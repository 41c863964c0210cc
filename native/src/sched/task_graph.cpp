#include "sched/task_graph.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>

#include "pyrt/error.h"

namespace pyrt {

int TaskGraph::add(Device device, std::string kind, int chunk, int layer, std::vector<int> deps,
                   std::function<void()> fn) {
  const int id = static_cast<int>(tasks_.size());
  for (int d : deps) {
    if (d < 0 || d >= id)
      fail(ErrorCode::kInternal, "task graph: dependency " + std::to_string(d) + " of task " + std::to_string(id) +
                                     " is not an earlier task");
    tasks_[d].succ.push_back(id);
  }
  tasks_.push_back({device, std::move(kind), chunk, layer, std::move(deps), {}, std::move(fn)});
  return id;
}

void TaskGraph::run(bool overlap, std::map<std::string, double>& latency_s) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto since = [&t0] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  const size_t n = tasks_.size();
  trace_.assign(n, TraceEvent{});
  auto record = [&](int id, double a, double b) {
    const Task& t = tasks_[id];
    trace_[id] = {t.kind, t.device, t.chunk, t.layer, a, b};
  };
  if (!overlap) {
    for (size_t i = 0; i < n; ++i) {
      const double a = since();
      tasks_[i].fn();
      record(static_cast<int>(i), a, since());
    }
  } else {
    // Priority: the task's own latency plus the longest path after it (upward rank).
    std::vector<double> rank(n, 0.0);
    for (size_t i = n; i-- > 0;) {
      double tail = 0;
      for (int s : tasks_[i].succ) tail = std::max(tail, rank[s]);
      const auto it = latency_s.find(tasks_[i].kind);
      rank[i] = (it != latency_s.end() ? it->second : 1e-3) + tail;
    }
    std::vector<int> waiting(n);
    std::vector<int> ready[2];
    for (size_t i = 0; i < n; ++i) {
      waiting[i] = static_cast<int>(tasks_[i].deps.size());
      if (waiting[i] == 0) ready[static_cast<int>(tasks_[i].device)].push_back(static_cast<int>(i));
    }
    std::mutex mu;
    std::condition_variable cv;
    size_t done = 0;
    std::exception_ptr error;
    auto worker = [&](Device dev) {
      const int d = static_cast<int>(dev);
      std::unique_lock<std::mutex> lk(mu);
      for (;;) {
        cv.wait(lk, [&] { return error || done == n || !ready[d].empty(); });
        if (error || done == n) return;
        // Highest rank first; ties go to the earlier chunk, then the earlier layer.
        auto best = std::max_element(ready[d].begin(), ready[d].end(), [&](int a, int b) {
          if (rank[a] != rank[b]) return rank[a] < rank[b];
          return std::tie(tasks_[a].chunk, tasks_[a].layer) > std::tie(tasks_[b].chunk, tasks_[b].layer);
        });
        const int id = *best;
        ready[d].erase(best);
        lk.unlock();
        const double a = since();
        try {
          tasks_[id].fn();
        } catch (...) {
          lk.lock();
          if (!error) error = std::current_exception();
          cv.notify_all();
          return;
        }
        const double b = since();
        lk.lock();
        record(id, a, b);
        ++done;
        for (int s : tasks_[id].succ) {
          if (--waiting[s] == 0) ready[static_cast<int>(tasks_[s].device)].push_back(s);
        }
        cv.notify_all();
      }
    };
    std::thread delegate_thread(worker, Device::kDelegate);
    worker(Device::kCpu);
    delegate_thread.join();
    if (error) std::rethrow_exception(error);
  }
  wall_s_ = since();
  // Profile: mean latency per kind feeds the next run's priorities.
  std::map<std::string, std::pair<double, int>> sums;
  for (const TraceEvent& e : trace_) {
    auto& s = sums[e.name];
    s.first += e.end_s - e.start_s;
    ++s.second;
  }
  for (const auto& [kind, s] : sums) latency_s[kind] = s.first / s.second;
}

std::string chrome_trace_json(const std::vector<TraceEvent>& events) {
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[";
  out += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"CPU\"}},";
  out += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":1,\"args\":{\"name\":\"delegate\"}}";
  char buf[256];
  for (const TraceEvent& e : events) {
    std::snprintf(buf, sizeof buf,
                  ",{\"name\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"chunk\":%d,"
                  "\"layer\":%d}}",
                  e.name.c_str(), static_cast<int>(e.device), e.start_s * 1e6, (e.end_s - e.start_s) * 1e6, e.chunk,
                  e.layer);
    out += buf;
  }
  return out + "]}";
}

}  // namespace pyrt
