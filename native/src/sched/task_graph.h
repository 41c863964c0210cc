// Out-of-order execution of a prefill's dependency graph on two devices: the CPU (the calling thread,
// with its thread pool inside each task) and a delegate (its own thread). Each device runs, among its
// ready tasks, the one with the longest remaining path (profiled latencies), so chunk k+1's delegate
// work fills the time chunk k spends in CPU attention. Records a timeline (Chrome trace JSON).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace pyrt {

enum class Device { kCpu = 0, kDelegate = 1 };

struct TraceEvent {
  std::string name;
  Device device;
  int chunk, layer;
  double start_s, end_s;  // since the graph started
};

class TaskGraph {
 public:
  // `kind` names the operation for latency profiling ("qkv", "attention", ...); deps are earlier ids.
  int add(Device device, std::string kind, int chunk, int layer, std::vector<int> deps, std::function<void()> fn);
  // overlap=false: every task on the calling thread in insertion order (the sequential baseline).
  // `latency_s` (kind -> seconds, updated with this run's measurements) sets priorities.
  void run(bool overlap, std::map<std::string, double>& latency_s);
  const std::vector<TraceEvent>& trace() const { return trace_; }
  double wall_s() const { return wall_s_; }

 private:
  struct Task {
    Device device;
    std::string kind;
    int chunk, layer;
    std::vector<int> deps, succ;
    std::function<void()> fn;
  };
  std::vector<Task> tasks_;
  std::vector<TraceEvent> trace_;
  double wall_s_ = 0;
};

// Chrome trace ("traceEvents", complete events, microseconds): one row per device.
std::string chrome_trace_json(const std::vector<TraceEvent>& events);

}  // namespace pyrt
